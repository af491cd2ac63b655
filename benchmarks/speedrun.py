"""Speedrun: wall time for a model to learn the world's abilities from scratch on this machine.

A recipe is a pretraining run followed by one or more chat phases (an optional mid-training
phase, then SFT; each is `lmlab sft` on the previous phase's run). The benchmark runs it through
lmlab's own API (`train.pretrain.pretrain`, `train.sft.sft`: the functions the CLI calls), keeps
the checkpoints of the last phase, and then evaluates them with the harness
(`eval.harness.evaluate`: test-split problems asked in held-out phrasings) on the three targets:

- `add3`: 3-digit addition, step by step (`arith:3:op=add`, cot), target 95%;
- `strings`: the string operations, step by step (`strings`, cot), target 90%;
- `icl8`: in-context rule induction from 8 examples (`icl:k=8`, direct), target 70%, with
  `icl0` (no examples) reported beside it: it should stay near chance.

Minutes are training wall time: every phase call from start to end (corpus generation,
tokenization, the loop, its validation losses and checkpoints), summed; a checkpoint's time is
its phase's start plus the phase's setup plus the loop's elapsed time at that step (from
metrics.jsonl). Evaluation runs after training and is excluded (reported as `minutes_eval`).
`minutes_to_X` is the time of the first evaluated checkpoint at which X met its target (null
if none did; the accuracy reached is in `X`). `forgetting` is the relative change of the
pretraining validation loss from before the first chat phase to after the last (the replay
check: within +5%).

    python benchmarks/speedrun.py [--recipe speedrun] [--threads 2] [--n 500] [--points 4]
        [--out DIR] [--quick]

`--quick` runs a tiny version of the recipe (seconds; for tests, not for the targets). The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmlab.config import (
    RunConfig,
    SFTConfig,
    TrainConfig,
    preset,
    sft_train_config,
)
from lmlab.data.corpora import load_corpus
from lmlab.data.tokenizer import Tokenizer
from lmlab.eval.harness import evaluate
from lmlab.infer import Engine
from lmlab.model.transformer import Transformer
from lmlab.train.checkpoint import load_checkpoint
from lmlab.train.pretrain import pretrain
from lmlab.train.sft import sft, world_chats

TARGETS: dict[str, tuple[str, str, float | None]] = {
    "add3": ("arith:3:op=add", "cot", 0.95),
    "strings": ("strings", "cot", 0.90),
    "icl8": ("icl:k=8", "direct", 0.70),
    "icl0": ("icl:k=0", "direct", None),
}
"""name -> (task spec, strategy, target accuracy or None for a figure that is only reported)."""
FORGETTING_LIMIT = 0.05


@dataclass
class Phase:
    """One chat phase: `lmlab sft` with these loop and data settings."""

    name: str
    train: TrainConfig
    sft: SFTConfig


@dataclass
class Recipe:
    """Pretraining, then the chat phases in order (the last one is evaluated)."""

    what: str
    run: RunConfig
    phases: list[Phase] = field(default_factory=list)


def baseline() -> Recipe:
    """Today's recipe (docs/world.md, run 3b): the `small` preset pretrained on `world`, then
    10 minutes of SFT on 40,000 world chats with replay 0.2 at lr 1e-3."""
    train = sft_train_config()
    train.max_steps, train.lr, train.min_lr = 560, 1e-3, 1e-4
    return Recipe(
        "small preset on world, SFT 560 steps (docs/world.md run 3b)",
        preset("small"),
        [Phase("sft", train, SFTConfig(n_world=40000, replay=0.2))],
    )


FOCUS = "arith=3:strings=3:icl=3:arith.op=add:icl.k=2-10"
"""The target families only: addition (1 to 4 digits), the string operations, ICL episodes."""


def speedrun() -> Recipe:
    """The candidate record recipe: the targets' families only, Muon, bf16 matmuls; a short
    pretraining, then a long chat phase (loss on the replies only) on the same families."""
    run = preset("small")
    run.data.corpus = f"world:n=60000:{FOCUS}:arith.cot=0.9:strings.cot=0.9:icl.cot=0.3"
    run.train = dataclasses.replace(
        run.train,
        max_steps=600,
        warmup_steps=50,
        eval_every=300,
        eval_iters=5,
        optimizer="muon",
        cpu_bf16=True,
    )
    train = dataclasses.replace(
        sft_train_config(),
        max_steps=1200,
        lr=1e-3,
        min_lr=1e-4,
        eval_iters=5,
        optimizer="muon",
        muon_lr=0.01,
        cpu_bf16=True,
    )
    chats = SFTConfig(
        n_world=100000,
        mix=f"{FOCUS}:arith.cot=1:strings.cot=0.9:icl.cot=0",
        pretrain_eval=True,
    )
    return Recipe(
        "focus families, Muon, bf16, short pretraining + long SFT",
        run,
        [Phase("sft", train, chats)],
    )


RECIPES: dict[str, Callable[[], Recipe]] = {"baseline": baseline, "speedrun": speedrun}


def quick(recipe: Recipe) -> Recipe:
    """The recipe shrunk to seconds: a one-layer model, a few hundred documents and chats, a
    few steps per phase (for tests of the benchmark itself)."""
    run = RunConfig.from_dict(recipe.run.to_dict())
    run.model = dataclasses.replace(
        run.model, n_layer=1, n_head=2, n_kv_head=None, d_model=32, context_length=512
    )
    run.data = dataclasses.replace(run.data, corpus="world:n=2000")
    run.train = dataclasses.replace(
        run.train, batch_size=4, grad_accum=1, max_steps=6, eval_every=3, eval_iters=1
    )
    phases = [
        Phase(
            p.name,
            dataclasses.replace(
                p.train, batch_size=4, grad_accum=1, max_steps=4, eval_every=2, eval_iters=1
            ),
            dataclasses.replace(p.sft, n_world=200, replay_rows=1),
        )
        for p in recipe.phases
    ]
    return Recipe(recipe.what + " (quick)", run, phases)


def training_texts(recipe: Recipe, docs: int, chats: int) -> list[str]:
    """Everything the recipe trains on, scaled down: `docs` pretraining documents (train and
    validation) and `chats` chats per chat phase (user and assistant turns as one text)."""
    spec = recipe.run.data.corpus
    if spec != "world" and not spec.startswith("world:"):
        raise ValueError(f"recipe corpus {spec!r} is not the world")
    options = [o for o in spec.removeprefix("world").split(":") if o and not o.startswith("n=")]
    corpus = load_corpus(":".join(["world", f"n={docs}", *options]), recipe.run.data.val_fraction)
    texts = corpus.train + corpus.val
    for p in recipe.phases:
        for chat in world_chats(chats, p.sft.seed, p.sft.style, p.sft.tasks, p.sft.mix):
            texts.append("\n".join(m["content"] for m in chat))
    return texts


def override(recipe: Recipe, assignments: list[str]) -> None:
    """Apply `--set` assignments: `run.model.d_model=192`, `run.data.corpus=world:n=5000`,
    `sft.train.lr=1e-3`, `sft.sft.replay=0.1` (a phase by name, then `train` or `sft`); values
    are JSON where they parse as JSON, else strings."""
    phases = {p.name: p for p in recipe.phases}
    for item in assignments:
        key, eq, raw = item.partition("=")
        parts = key.split(".")
        if not eq or len(parts) != 3:
            raise SystemExit(f"error: --set {item!r} is not OWNER.SECTION.FIELD=VALUE")
        owner, section, name = parts
        target: Any = (getattr(recipe.run, section, None) if owner == "run" else None) or getattr(
            phases.get(owner), section, None
        )
        if target is None or not hasattr(target, name):
            raise SystemExit(f"error: --set {key}: no such setting in this recipe")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        setattr(target, name, value)


def fit_seconds(run: Path) -> dict[int, float]:
    """Seconds since the start of the training loop at each logged step (from metrics.jsonl)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["step"] / r["steps_per_s"] for r in rows}


def timed(fn: Callable[[], dict[str, float]]) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def train(recipe: Recipe, out: Path, points: int) -> dict[str, Any]:
    """Run every phase into `out`; return the phases' wall times, the results of each call and
    (step, seconds since the start of pretraining) of each kept checkpoint of the last phase."""
    phases = recipe.phases
    if not phases:
        raise ValueError("a recipe needs at least one chat phase (the evaluated model chats)")
    last = phases[-1]
    every = max(1, last.train.max_steps // points)
    last.train = dataclasses.replace(
        last.train,
        eval_every=every,
        ckpt_every=every,
        keep_ckpts=last.train.max_steps // every + 1,
    )
    walls: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}
    results["pretrain"], walls["pretrain"] = timed(
        lambda: pretrain(recipe.run, out / "pretrain", show_progress=False).summary
    )
    base = out / "pretrain"
    for p in phases:
        results[p.name], walls[p.name] = timed(
            lambda p=p, base=base: (
                sft(base, out / p.name, p.train, p.sft, show_progress=False).summary
            )
        )
        base = out / p.name
    before_last = sum(walls.values()) - walls[last.name]
    elapsed = fit_seconds(base)
    setup = walls[last.name] - elapsed[last.train.max_steps]
    ckpts = sorted((base / "checkpoints").glob("step_*"))
    at = [(int(c.name.removeprefix("step_")), c) for c in ckpts]
    return {
        "walls": walls,
        "results": results,
        "checkpoints": [(s, c, before_last + setup + elapsed[s]) for s, c in at],
    }


def evaluate_checkpoint(
    run: Path, ckpt: Path, n: int, names: list[str], batch_size: int
) -> dict[str, float]:
    """Accuracy of each named target at one checkpoint (harness, test split, greedy)."""
    cfg = RunConfig.load(run / "config.json")
    model = Transformer(cfg.model)
    load_checkpoint(ckpt, model)
    model.eval()
    tok = Tokenizer.load(run / "tokenizer.json")
    engine = Engine(model, tok, max_batch=batch_size)
    out = {}
    for name in names:
        spec, strategy, _ = TARGETS[name]
        report = evaluate(model, tok, [spec], strategy, n=n, batch_size=batch_size, engine=engine)
        out[name] = report["tasks"][spec]["accuracy"]
    return out


def forgetting(results: dict[str, dict[str, float]], phases: list[Phase]) -> float | None:
    """Relative change of the pretraining validation loss over all chat phases."""
    first, last = results[phases[0].name], results[phases[-1].name]
    before = first.get("pretrain_val_loss_before")
    after = last.get("pretrain_val_loss_after")
    if before is None or after is None:
        return None
    return (after - before) / before


def tokens_per_s(run: Path) -> float:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["tokens_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="baseline", choices=sorted(RECIPES))
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--n", type=int, default=500, help="test problems per target and checkpoint")
    ap.add_argument("--points", type=int, default=4, help="checkpoints of the last phase to score")
    ap.add_argument("--batch-size", type=int, default=64, help="generation batch in evaluation")
    ap.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="a tiny version (seconds; for tests)")
    ap.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override a recipe setting"
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]()
    override(recipe, args.set)
    n = args.n
    if args.quick:
        recipe, n = quick(recipe), min(n, 4)
    tmp = None if args.out else tempfile.mkdtemp(prefix="speedrun-")
    out = args.out or Path(tmp)  # type: ignore[arg-type]
    out.mkdir(parents=True, exist_ok=True)
    # a fresh cache: every run pays for its own tokenizer and token shards
    os.environ["LMLAB_CACHE"] = str(out / "cache")
    (out / "recipe.json").write_text(
        json.dumps(
            {
                "recipe": args.recipe,
                "what": recipe.what,
                "set": args.set,
                "run": recipe.run.to_dict(),
                "phases": [
                    {
                        "name": p.name,
                        "train": dataclasses.asdict(p.train),
                        "sft": dataclasses.asdict(p.sft),
                    }
                    for p in recipe.phases
                ],
            },
            indent=2,
        )
    )
    trained = train(recipe, out, args.points)
    run = out / recipe.phases[-1].name
    t0 = time.perf_counter()
    curve = []
    reached: dict[str, float | None] = {k: None for k, (_, _, t) in TARGETS.items() if t}
    scores: dict[str, float] = {}
    for i, (step, ckpt, seconds) in enumerate(trained["checkpoints"]):
        final = i == len(trained["checkpoints"]) - 1
        names = [k for k in TARGETS if final or TARGETS[k][2] is not None]
        scores = evaluate_checkpoint(run, ckpt, n, names, args.batch_size)
        minutes = seconds / 60
        for k in reached:
            target = TARGETS[k][2]
            if reached[k] is None and target is not None and scores[k] >= target:
                reached[k] = minutes
        curve.append(
            {
                "step": step,
                "minutes": round(minutes, 2),
                **{k: round(v, 4) for k, v in scores.items()},
            }
        )
        print(json.dumps({"checkpoint": curve[-1]}), flush=True)
    eval_minutes = (time.perf_counter() - t0) / 60
    walls = trained["walls"]
    forget = forgetting(trained["results"], recipe.phases)
    result: dict[str, Any] = {
        "recipe": args.recipe,
        "set": args.set,
        "quick": args.quick,
        "threads": args.threads,
        "n": n,
        **{f"minutes_to_{k}": None if v is None else round(v, 2) for k, v in reached.items()},
        "minutes_total": round(sum(walls.values()) / 60, 2),
        **{f"minutes_{k}": round(v / 60, 2) for k, v in walls.items()},
        "minutes_eval": round(eval_minutes, 2),
        **{k: round(scores[k], 4) for k in TARGETS},
        "forgetting": None if forget is None else round(forget, 4),
        "forgetting_ok": None if forget is None else forget <= FORGETTING_LIMIT,
        "pretrain_tokens_per_s": round(tokens_per_s(out / "pretrain"), 1),
        "sft_tokens_per_s": round(tokens_per_s(run), 1),
        "curve": curve,
    }
    print(json.dumps(result), flush=True)
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
