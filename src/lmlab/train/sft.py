"""Supervised fine-tuning: chat data, the masked next-token objective, and the phase driver.

Data comes from the task world (direct answers and, when the user asks to think step by step,
worked solutions) or from a JSONL file in one of TRL's SFT dataset formats, one row each:
`{"messages": [...]}` (a chat), `{"prompt": [...], "completion": [...]}` (a conversational
prompt and its completion), `{"prompt": "...", "completion": "..."}` (standard: the prompt is one
user turn, the completion the assistant's reply) or `{"text": "..."}` (plain language modelling).
Each chat is encoded with the tokenizer's chat template and the loss covers only the
assistant-written tokens (`Tokenizer.encode_chat`'s mask), of the completion alone when the row
has a prompt; a plain text is trained on in full, as pretraining text is. Short examples are
packed into rows of context length, drawn and packed afresh for every batch, each starting with
its own <|bos|> (plain concatenation: a chat may attend to the chats packed before it, as in most
SFT packers without block-diagonal masks; fresh packing keeps it from relying on fixed
neighbours). Optional replay mixes next-token loss on the base run's pretraining data into every
step against forgetting. Training runs on the one loop (`Trainer.fit`) into a normal run directory.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from lmlab.config import RunConfig, SFTConfig, TrainConfig, build_config
from lmlab.data import world
from lmlab.data.chats import check_messages
from lmlab.data.corpora import load_corpus
from lmlab.data.jsonl import read_jsonl
from lmlab.data.shards import Batches, build_shards
from lmlab.data.tokenizer import Message, Tokenizer
from lmlab.model.moe import with_router_losses
from lmlab.runs import require_stage, write_json
from lmlab.train.pretrain import next_token_loss
from lmlab.train.stage import StageResult, settings_of, start_stage

console = Console(stderr=True)

IGNORE = -100


class SFTDataError(ValueError):
    """Chat data that cannot be used (shown to the user as one line, with file and line)."""


# --- chat data --------------------------------------------------------------------------------


FORMATS = '"messages", "text", or "prompt" and "completion"'


@dataclass(frozen=True)
class Sample:
    """One SFT example: a chat trained on its assistant messages from index `train_from` on, or
    (with `text`) a plain text trained on in full."""

    messages: list[Message] = field(default_factory=list)
    train_from: int = 0
    text: str | None = None


def _has_reply(messages: list[Message]) -> bool:
    return any(m["role"] == "assistant" for m in messages)


def read_sample(row: Any, where: str) -> Sample:
    """One JSONL row in one of TRL's SFT formats as a Sample, or SFTDataError saying what is
    wrong at `where` (a `file:line`)."""
    if not isinstance(row, dict):
        raise SFTDataError(f"{where}: expected an object with {FORMATS}")
    keys = {
        k for k in ("messages", "text", "prompt", "completion", "chosen", "rejected") if k in row
    }
    if keys == {"messages"}:
        messages = check_messages(row["messages"], where, "messages", SFTDataError)
        if not _has_reply(messages):
            raise SFTDataError(f"{where}: chat has no assistant turn (nothing to train on)")
        return Sample(messages)
    if keys == {"text"}:
        if not isinstance(row["text"], str) or not row["text"]:
            raise SFTDataError(f'{where}: "text" must be a non-empty string')
        return Sample(text=row["text"])
    if keys == {"prompt", "completion"}:
        prompt, completion = row["prompt"], row["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            # a standard prompt is one user turn and the completion the reply, as in the
            # preference rows: every stage after SFT prompts the model through the template
            user: Message = {"role": "user", "content": prompt}
            return Sample([user, {"role": "assistant", "content": completion}], train_from=1)
        if isinstance(prompt, list) and isinstance(completion, list):
            opening = check_messages(prompt, where, "prompt", SFTDataError)
            reply = check_messages(completion, where, "completion", SFTDataError)
            if not _has_reply(reply):
                raise SFTDataError(
                    f"{where}: completion has no assistant message (nothing to train on)"
                )
            return Sample(opening + reply, train_from=len(opening))
        raise SFTDataError(
            f'{where}: "prompt" and "completion" must both be strings or both lists of messages'
        )
    if {"chosen", "rejected"} & keys:
        raise SFTDataError(f"{where}: a preference row (chosen/rejected) is for lmlab rm or dpo")
    if keys == {"prompt"}:
        raise SFTDataError(f"{where}: a prompt-only row has no completion to train on")
    if not keys:
        raise SFTDataError(f"{where}: expected an object with {FORMATS}")
    raise SFTDataError(f"{where}: a row has one of {FORMATS}, not {' and '.join(sorted(keys))}")


def load_chats(path: Path) -> list[Sample]:
    """SFT samples from a JSONL file, one row per line in a format of `read_sample` (blank lines
    skipped)."""
    samples = [read_sample(row, where) for where, row in read_jsonl(path, SFTDataError)]
    if not samples:
        raise SFTDataError(f"{path} holds no chats")
    return samples


def world_chats(
    n: int, seed: int = 0, style: str = "both", tasks: list[str] | None = None, mix: str = ""
) -> list[list[Message]]:
    """`n` chats on train-split world problems: direct answers, or worked solutions when the
    user asks to think step by step ('both': each chat picks one at random). A `mix` in the
    world corpus syntax (`arith=3:arith.op=add:icl.k=4-8:icl.cot=0`) replaces `tasks`: task
    weights, knobs and per-task worked-solution fractions (`cot=` or the style elsewhere)."""
    if style not in ("both", "direct", "cot"):
        raise SFTDataError(f"style must be both, direct or cot, got {style!r}")
    names = tasks or list(world.FAMILIES)
    weights = {t: world.DEFAULT_WEIGHTS.get(t, 1.0) for t in names}
    for t in names:
        world.family(t)
    opts = world.parse_options(mix) if mix else {}
    if not set(opts) <= {"weights", "knobs", "cot", "cots"}:
        raise SFTDataError("a chat mix takes task weights, TASK.KNOB, cot and TASK.cot only")
    default = opts.get("cot", {"both": 0.5, "cot": 1.0, "direct": 0.0}[style])
    cots = {t: opts.get("cots", {}).get(t, default) for t in world.FAMILIES}
    rng = random.Random(f"sft-style|{seed}")
    chats: list[list[Message]] = []
    problems = (
        world.mixed(n, seed, "train", opts.get("weights", weights), opts.get("knobs"))
        if mix
        else world.mixed(n, seed, "train", weights)
    )
    for p in problems:
        if mix:
            cot = rng.random() < cots[p.task]
        else:
            cot = style == "cot" or (style == "both" and rng.random() < 0.5)
        chats.append(
            [
                {"role": "user", "content": world.prompt(p, cot)},
                {"role": "assistant", "content": world.response(p, cot)},
            ]
        )
    return chats


def _split_key(sample: Sample) -> str:
    if sample.text is None and not sample.train_from:
        return json.dumps(sample.messages)  # a chat hashes as it did before the other formats
    return json.dumps(asdict(sample))


def split_chats(
    samples: list[Sample], val_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """(train, val): at least one sample each, held out by a seeded hash of the content."""
    if len(samples) < 2:
        raise SFTDataError(f"need at least 2 chats (one for validation), got {len(samples)}")

    def h(sample: Sample) -> float:
        digest = hashlib.sha256(f"{seed}|{_split_key(sample)}".encode()).hexdigest()
        return int(digest[:8], 16) / 16**8

    scores = [h(c) for c in samples]
    val_idx = {i for i, s in enumerate(scores) if s < val_fraction}
    if not val_idx:
        val_idx = {min(range(len(samples)), key=scores.__getitem__)}
    if len(val_idx) == len(samples):
        val_idx.discard(max(range(len(samples)), key=scores.__getitem__))
    train = [c for i, c in enumerate(samples) if i not in val_idx]
    return train, [c for i, c in enumerate(samples) if i in val_idx]


# --- encoding and packing ---------------------------------------------------------------------


Example = tuple[list[int], list[bool]]


@dataclass
class Rows:
    """Training rows: inputs [N, T] and targets [N, T] (IGNORE where no loss is taken)."""

    x: Tensor
    y: Tensor
    dropped: int = 0
    """Chats longer than a row, left out."""

    def __len__(self) -> int:
        return self.x.shape[0]


def encode_sample(tok: Tokenizer, sample: Sample) -> Example:
    """Token ids of a sample and the mask of the tokens it trains on: a chat's assistant-written
    tokens in its messages from `train_from` on, or every token of a plain text after <|bos|>
    (the text is laid out as pretraining documents are)."""
    if sample.text is not None:
        ids = [tok.bos_id, *tok.encode(sample.text)]
        return ids, [False] + [True] * (len(ids) - 1)
    ids, mask = tok.encode_chat(sample.messages)
    if sample.train_from:
        prompt = tok.encode_chat(sample.messages[: sample.train_from])[0]
        if ids[: len(prompt)] != prompt:
            raise SFTDataError("the chat template renders a prompt differently inside its chat")
        mask = [False] * len(prompt) + mask[len(prompt) :]
    return ids, mask


def encode_chats(tok: Tokenizer, samples: list[Sample]) -> list[Example]:
    return [encode_sample(tok, s) for s in samples]


def _to_rows(rows: list[Example], length: int, pad_id: int, dropped: int = 0) -> Rows:
    """Pad rows of (ids, mask) to `length` and shift them into inputs and masked targets."""
    ids_t = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask_t = torch.zeros((len(rows), length), dtype=torch.bool)
    for r, (ids, mask) in enumerate(rows):
        ids_t[r, : len(ids)] = torch.tensor(ids)
        mask_t[r, : len(mask)] = torch.tensor(mask)
    y = torch.where(mask_t[:, 1:], ids_t[:, 1:], IGNORE)
    return Rows(ids_t[:, :-1].contiguous(), y, dropped)


def _fill(
    examples: list[Example], order: Any, length: int, packed: bool, n_rows: int | None
) -> list[Example]:
    """Lay examples, in `order`, into rows of at most `length` tokens: greedily several per row
    when `packed`, else one per row; stop once `n_rows` rows are full (None: use them all)."""
    rows: list[Example] = []
    cur_ids: list[int] = []
    cur_mask: list[bool] = []
    for i in order:
        ids, mask = examples[i]
        if cur_ids and (not packed or len(cur_ids) + len(ids) > length):
            rows.append((cur_ids, cur_mask))
            cur_ids, cur_mask = [], []
            if n_rows is not None and len(rows) == n_rows:
                return rows
        cur_ids, cur_mask = cur_ids + ids, cur_mask + mask
    if cur_ids:
        rows.append((cur_ids, cur_mask))
    return rows


def pack(
    examples: list[Example], context: int, pad_id: int, packed: bool = True, seed: int = 0
) -> Rows:
    """Every chat that fits, shuffled by `seed`, in rows of `context + 1` tokens (validation)."""
    length = context + 1
    fitting = [e for e in examples if len(e[0]) <= length]
    order = list(range(len(fitting)))
    random.Random(seed).shuffle(order)
    rows = _fill(fitting, order, length, packed, None)
    return _to_rows(rows, length, pad_id, dropped=len(examples) - len(fitting))


class ChatBatches:
    """Training batches packed afresh for every (step, micro-batch) from randomly drawn chats, so
    a chat meets different neighbours each time it is seen; seeded by (seed, step, micro), so
    resume is exact."""

    def __init__(
        self, examples: list[Example], context: int, pad_id: int, packed: bool, seed: int
    ) -> None:
        self.length = context + 1
        self.examples = [e for e in examples if len(e[0]) <= self.length]
        self.dropped = len(examples) - len(self.examples)
        self.pad_id, self.packed, self.seed = pad_id, packed, seed

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, step: int, micro: int, batch_size: int, rank: int = 0) -> Rows:
        """Micro-batch `micro` of optimizer step `step` for data-parallel rank `rank`."""
        rng = np.random.default_rng([self.seed, step, micro, rank])
        order = iter(lambda: int(rng.integers(len(self.examples))), None)
        rows = _fill(self.examples, order, self.length, self.packed, batch_size)
        return _to_rows(rows, self.length, self.pad_id)


# --- objective --------------------------------------------------------------------------------


def masked_loss(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over the target tokens that are not IGNORE (float32)."""
    logits = model(x)
    total = F.cross_entropy(
        logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum"
    )
    return total / (y != IGNORE).sum().clamp(min=1)


def sft_objective(replay: float = 0.0) -> Any:
    """The SFT objective: masked chat loss, mixed as (1 - replay) * chat + replay * next-token
    loss when the batch carries pretraining windows (`rx`, `ry`)."""

    def objective(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        chat = with_router_losses(model, masked_loss(model, batch["x"], batch["y"]))
        if "rx" not in batch:
            return chat, {}
        lm, _ = next_token_loss(model, (batch["rx"], batch["ry"]))
        loss = (1 - replay) * chat + replay * lm
        return loss, {"chat_loss": chat.item(), "replay_loss": lm.item()}

    return objective


# --- the phase driver -------------------------------------------------------------------------


def load_sft_chats(cfg: SFTConfig) -> list[Sample]:
    if cfg.data == "world":
        chats = world_chats(cfg.n_world, cfg.seed, cfg.style, cfg.tasks, cfg.mix)
        return [Sample(c) for c in chats]
    return load_chats(Path(cfg.data))


def sft(
    base: Path,
    out: Path,
    train: TrainConfig,
    cfg: SFTConfig,
    show_progress: bool = True,
    resume: bool = False,
) -> StageResult:
    """Fine-tune the latest checkpoint of run `base` on chats into a new run directory `out`
    (with `resume`: continue the SFT run in `out` from its latest checkpoint)."""
    cfg.validate()
    settings = settings_of(train=train, sft=cfg)
    stage = start_stage("sft", out, train, settings, base, resume, show_progress)
    model, tok, base_cfg = stage.load_base(base)
    context = base_cfg.model.context_length
    rank, world = stage.dist.rank, stage.dist.world

    train_chats, val_chats = split_chats(load_sft_chats(cfg), cfg.val_fraction, cfg.seed)
    examples = encode_chats(tok, train_chats)
    chats = ChatBatches(examples, context, tok.pad_id, cfg.pack, cfg.seed)
    val_rows = pack(encode_chats(tok, val_chats), context, tok.pad_id, cfg.pack, cfg.seed)
    if len(chats) == 0 or len(val_rows) == 0:
        raise SFTDataError(f"no chat fits the context length {context} tokens; shorten the chats")
    if (chats.dropped or val_rows.dropped) and stage.is_main:
        console.print(
            f"[yellow]left out {chats.dropped + val_rows.dropped} chats longer than "
            f"{context + 1} tokens"
        )

    replay_train = replay_val = None
    if cfg.replay > 0 or cfg.pretrain_eval:
        corpus = load_corpus(
            base_cfg.data.corpus, base_cfg.data.val_fraction, base_cfg.data.text_field
        )
        shards = build_shards(corpus, tok, show_progress=stage.show_progress)
        replay_train = Batches(shards.train, context, train.seed)
        replay_val = Batches(shards.val, context, train.seed)

    def pretrain_val_loss() -> float:
        assert replay_val is not None
        batches = replay_val.eval_batches(train.eval_iters, train.batch_size, rank, world)
        return trainer.evaluate(next_token_loss, batches)

    stage.write_run_files(RunConfig(model=base_cfg.model, train=train, data=base_cfg.data), tok)
    info: dict[str, Any] = {
        "base": str(base),
        "sft": asdict(cfg),
        "train_chats": len(train_chats),
        "val_chats": len(val_chats),
        "val_rows": len(val_rows),
        "dropped_chats": chats.dropped + val_rows.dropped,
        "trained_tokens": sum(sum(m) for _, m in chats.examples),
    }
    trainer = stage.trainer(model)
    if replay_val is not None:
        # measured on the base weights before the first step; a resume reads it back
        info["pretrain_val_loss_before"] = stage.once("pretrain_val_loss_before", pretrain_val_loss)

    def batch(step: int, micro: int) -> dict[str, Tensor]:
        rows = chats.batch(step, micro, train.batch_size, rank)
        b = {"x": rows.x, "y": rows.y}
        if cfg.replay > 0:
            assert replay_train is not None
            b["rx"], b["ry"] = replay_train.train_batch(
                step, micro, cfg.replay_rows, train.grad_accum, rank, world
            )
        return b

    def val_batches() -> list[dict[str, Tensor]]:
        bs = train.batch_size
        n = min(len(val_rows), train.eval_iters * bs)
        return [  # rank r takes every world-th batch
            {"x": val_rows.x[i : i + bs], "y": val_rows.y[i : i + bs]}
            for i in range(rank * bs, n, world * bs)
        ]

    if stage.is_main:
        console.print(
            f"[bold]lmlab sft[/] {base} -> {out}  data={cfg.data}  "
            f"{len(train_chats):,} chats ({info['trained_tokens']:,} tokens trained on), "
            f"{len(val_chats):,} val chats  replay={cfg.replay}  device={stage.device}"
            + (f"  resuming at step {trainer.step_count}" if trainer.step_count else "")
        )
    tokens_per_step = train.batch_size * train.grad_accum * world * context
    last = trainer.fit(sft_objective(cfg.replay), batch, tokens_per_step, val_batches)
    if replay_val is not None:
        info["pretrain_val_loss_after"] = pretrain_val_loss()
        before, after = info["pretrain_val_loss_before"], info["pretrain_val_loss_after"]
        if stage.is_main:
            console.print(
                f"pretraining val loss: before {before:.4f}  after {after:.4f}  "
                f"({100 * (after - before) / before:+.1f}%)"
            )
    info["final"] = last
    if stage.is_main:
        write_json(out / "sft.json", info)
    return stage.finish({**last, **{k: v for k, v in info.items() if k.startswith("pretrain_val")}})


def resume(out: Path, show_progress: bool = True) -> StageResult:
    """Continue the SFT run in `out` (settings and base run from its stage.json)."""
    record = require_stage(out, "sft")
    settings = record["settings"]
    return sft(
        Path(record["base"]),
        out,
        build_config(TrainConfig, settings["train"]),
        build_config(SFTConfig, settings["sft"]),
        show_progress,
        resume=True,
    )
