"""Pretraining: the next-token objective and the driver that prepares data and runs the loop."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from lmlab.config import RunConfig
from lmlab.data.corpora import Corpus, load_corpus
from lmlab.data.shards import Batches, Shards, build_shards, cache_root
from lmlab.data.tokenizer import Tokenizer, build_tokenizer
from lmlab.model.moe import router_losses, routing_metrics
from lmlab.model.transformer import Transformer, flops_per_token, param_counts
from lmlab.train.checkpoint import CheckpointError, latest_checkpoint, write_run_files
from lmlab.train.loop import Trainer, init_distributed

console = Console(stderr=True)


class RunDirError(ValueError):
    """An output directory that cannot take this run."""


def next_token_loss(
    model: nn.Module, batch: tuple[Tensor, Tensor]
) -> tuple[Tensor, dict[str, float]]:
    """Mean cross-entropy of predicting each next token (computed in float32).

    For MoE models, in training the routers' balancing losses (Switch aux + z-loss) are added
    and the metrics hold the plain cross-entropy (`ce`) and per-layer routing statistics;
    evaluation returns the cross-entropy alone, comparable with dense models.
    """
    x, y = batch
    logits = model(x)
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    aux = router_losses(model)
    if aux is None:
        return loss, {}
    metrics = {"ce": loss.item(), **routing_metrics(model)}
    return (loss + aux if model.training else loss), metrics


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def get_tokenizer(cfg: RunConfig, corpus: Corpus) -> Tokenizer:
    """Build (or fetch from the cache) the tokenizer the data config asks for, trained on the
    corpus's train split, and set the model's vocabulary size to fit it."""
    kind = cfg.data.tokenizer
    if kind in ("bpe", "char"):
        key = hashlib.sha256(
            f"{corpus.fingerprint}:{kind}:{cfg.model.vocab_size}".encode()
        ).hexdigest()[:20]
        path = cache_root() / "tokenizers" / f"{key}.json"
        if path.exists():
            tok = Tokenizer.load(path)
        else:
            tok = build_tokenizer(kind, iter(corpus.train), cfg.model.vocab_size)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tok.save(tmp)
            tmp.replace(path)
    else:
        tok = build_tokenizer(kind, corpus.train, cfg.model.vocab_size)
    if kind != "bpe":
        # char/byte/file vocabularies set the model's, padded to a multiple of 64 for fast matmuls
        cfg.model.vocab_size = _round_up(tok.vocab_size, 64)
    elif tok.vocab_size > cfg.model.vocab_size:
        raise ValueError(
            f"tokenizer has {tok.vocab_size} tokens > model vocab {cfg.model.vocab_size}"
        )
    return tok


def prepare_data(cfg: RunConfig, show_progress: bool = True) -> tuple[Tokenizer, Shards]:
    corpus = load_corpus(cfg.data.corpus, cfg.data.val_fraction, cfg.data.text_field)
    tok = get_tokenizer(cfg, corpus)
    return tok, build_shards(corpus, tok, show_progress=show_progress)


def check_new_run_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output {out} exists and is not a directory")
    if (out / "config.json").exists():
        raise RunDirError(
            f"{out} already holds a run; continue it with `lmlab pretrain --resume {out}` "
            "or choose another --out"
        )
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} is not empty; choose another --out")


def describe(cfg: RunConfig) -> dict[str, Any]:
    counts = param_counts(cfg.model)
    return {
        **{f"params_{k}": v for k, v in counts.items()},
        "train_flops_per_token": flops_per_token(cfg.model)["train"],
    }


def pretrain(
    cfg: RunConfig | None,
    out: Path,
    resume: bool = False,
    show_progress: bool = True,
    max_steps: int | None = None,
) -> dict[str, float]:
    """Pretrain a model as `cfg` says into run directory `out`.

    With `resume`, `cfg` is ignored: the run's own config.json is used and training continues
    from its latest checkpoint (to `max_steps` when given, e.g. to extend a finished run).
    """
    if resume:
        if not (out / "config.json").is_file():
            raise CheckpointError(f"{out} holds no run to resume (no config.json)")
        latest_checkpoint(out)  # fail early, before any data work, if there is no checkpoint
        cfg = RunConfig.load(out / "config.json")
        if max_steps is not None:
            cfg.train.max_steps = max_steps
    else:
        if cfg is None:
            raise ValueError("a new run needs a config")
        check_new_run_dir(out)
    cfg.model.validate()
    cfg.train.validate()
    rank_info, device = init_distributed(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    if rank_info.world > 1 and not rank_info.is_main:
        dist.barrier()  # rank 0 builds the tokenizer and shards first; the rest read the cache
    tok, shards = prepare_data(cfg, show_progress and rank_info.is_main)
    if rank_info.world > 1 and rank_info.is_main:
        dist.barrier()
    train_data = Batches(shards.train, cfg.model.context_length, cfg.train.seed)
    val_data = Batches(shards.val, cfg.model.context_length, cfg.train.seed)

    model = Transformer(cfg.model)
    trainer = Trainer(model, cfg.train, out, rank_info, device, show_progress)
    if rank_info.is_main:
        write_run_files(out, cfg, tok)  # on resume: records a raised max_steps
    if resume:
        trainer.resume()
    if rank_info.is_main:
        info = describe(cfg)
        console.print(
            f"[bold]lmlab pretrain[/] {out}  corpus={cfg.data.corpus} "
            f"({len(shards.train):,} train / {len(shards.val):,} val tokens)  "
            f"params={info['params_total']:,} (non-embedding {info['params_non_embedding']:,})  "
            + (
                f"active={info['params_active']:,}  "
                if info["params_active"] != info["params_total"]
                else ""
            )
            + f"device={device}  world={rank_info.world}"
            + (f"  resuming at step {trainer.step_count}" if resume else "")
        )
    tokens_per_step = (
        cfg.train.batch_size * cfg.train.grad_accum * rank_info.world * cfg.model.context_length
    )
    last = trainer.fit(
        next_token_loss,
        lambda step, micro: train_data.train_batch(
            step, micro, cfg.train.batch_size, cfg.train.grad_accum, rank_info.rank, rank_info.world
        ),
        tokens_per_step,
        lambda: val_data.eval_batches(
            cfg.train.eval_iters, cfg.train.batch_size, rank_info.rank, rank_info.world
        ),
    )
    if rank_info.is_main and last:
        console.print(f"done: {json.dumps({k: round(v, 4) for k, v in last.items()})}")
    return last
