"""Pretraining: the next-token objective and the stage that prepares data and runs the loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from lmlab.config import RunConfig
from lmlab.data.shards import Batches, prepare_data
from lmlab.data.tokenizer import Tokenizer
from lmlab.model.moe import router_losses, routing_metrics
from lmlab.model.transformer import Transformer, flops_per_token, param_counts
from lmlab.runs import CONFIG_FILE, TOKENIZER_FILE, CheckpointError, RunDirError, read_stage
from lmlab.train.stage import StageResult, settings_of, start_stage

console = Console(stderr=True)


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
) -> StageResult:
    """Pretrain a model as `cfg` says into run directory `out`.

    With `resume`, `cfg` is ignored: the run's own config.json and tokenizer.json are used and
    training continues from its latest checkpoint (to `max_steps` when given, e.g. to extend a
    finished run; a run killed before its first checkpoint starts again from step 0). A corpus
    that changed since the run started is refused: its tokens would no longer be the ones the
    run's tokenizer and data order were built for.
    """
    tok: Tokenizer | None = None
    if resume:
        cfg, tok = _resumed_config(out)
        if max_steps is not None:
            cfg.train.max_steps = max_steps
    elif cfg is None:
        raise ValueError("a new run needs a config")
    cfg.model.validate()
    stage = start_stage(
        "pretrain", out, cfg.train, settings_of(**cfg.to_dict()), None, resume, show_progress
    )
    if stage.dist.world > 1 and not stage.is_main:
        dist.barrier()  # rank 0 builds the tokenizer and shards first; the rest read the cache
    tok, shards, corpus = prepare_data(cfg, tok, stage.show_progress)
    if stage.dist.world > 1 and stage.is_main:
        dist.barrier()
    fingerprint = stage.once("corpus_fingerprint", lambda: corpus.fingerprint)
    if fingerprint != corpus.fingerprint:
        raise RunDirError(
            f"the corpus {cfg.data.corpus!r} changed since {out} started (fingerprint "
            f"{fingerprint[:12]} -> {corpus.fingerprint[:12]}); resuming would train on other "
            "data than the run's tokenizer and data order were built for: start a new run"
        )
    train_data = Batches(shards.train, cfg.model.context_length, cfg.train.seed)
    val_data = Batches(shards.val, cfg.model.context_length, cfg.train.seed)
    stage.write_run_files(cfg, tok)  # on resume: records a raised max_steps
    trainer = stage.trainer(Transformer(cfg.model))
    rank, world = stage.dist.rank, stage.dist.world
    if stage.is_main:
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
            + f"device={stage.device}  world={world}"
            + (f"  resuming at step {trainer.step_count}" if trainer.step_count else "")
        )
    tokens_per_step = cfg.train.batch_size * cfg.train.grad_accum * world * cfg.model.context_length
    last = trainer.fit(
        next_token_loss,
        lambda step, micro: train_data.train_batch(
            step, micro, cfg.train.batch_size, cfg.train.grad_accum, rank, world
        ),
        tokens_per_step,
        lambda: val_data.eval_batches(cfg.train.eval_iters, cfg.train.batch_size, rank, world),
    )
    if stage.is_main and last:
        console.print(f"done: {json.dumps({k: round(v, 4) for k, v in last.items()})}")
    return stage.finish({**describe(cfg), **last})


def _resumed_config(out: Path) -> tuple[RunConfig, Tokenizer | None]:
    """A run's config and tokenizer; from stage.json alone when it was killed before writing
    them (the tokenizer is then built again, as the first attempt would have)."""
    if (out / CONFIG_FILE).is_file() and (out / TOKENIZER_FILE).is_file():
        return RunConfig.load(out / CONFIG_FILE), Tokenizer.load(out / TOKENIZER_FILE)
    record = read_stage(out) if out.is_dir() else None
    if record is None or record["stage"] != "pretrain":
        raise CheckpointError(f"{out} holds no run to resume (no config.json/tokenizer.json)")
    return RunConfig.from_dict(record["settings"]), None


def resume(out: Path, show_progress: bool = True, max_steps: int | None = None) -> StageResult:
    """Continue the pretraining run in `out` from its latest checkpoint."""
    return pretrain(None, out, resume=True, show_progress=show_progress, max_steps=max_steps)
