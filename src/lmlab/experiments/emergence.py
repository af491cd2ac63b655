"""The emergence study: a ladder of model sizes trained alike, scored with exact match AND
continuous metrics, to see where an ability looks abrupt only because of the metric.

Schaeffer et al. (2023, "Are emergent abilities of large language models a mirage?") show that
all-or-nothing metrics such as exact match can turn a smooth improvement in per-token quality
into a sudden jump. Here each size of the ladder is pretrained on the same corpus for the same
number of steps and fine-tuned on the same world chats (reusing any stage already on disk), then
evaluated by the harness on three abilities:

- multi-step arithmetic by digit count (`arith:1..4`),
- in-context learning by number of shots (`icl:k=0..8`),
- instruction following in held-out phrasings (`strings`, test split = held-out templates).

For every task spec the rows hold exact match and the continuous metrics (per-character /
per-digit accuracy, 1 - normalised edit distance, gold log-likelihood per token) against
parameters and training FLOPs. `sharpness` summarises each curve: the largest rise between two
adjacent sizes as a fraction of the whole rise (1: all of it in one step, abrupt; 1/(sizes-1):
even steps).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from lmlab.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    SFTConfig,
    TrainConfig,
    sft_train_config,
)
from lmlab.data.corpora import load_corpus
from lmlab.eval.harness import evaluate_task
from lmlab.experiments.config import SIZES, LadderConfig
from lmlab.infer import Engine
from lmlab.model.load import load_run
from lmlab.model.transformer import flops_per_token, param_counts
from lmlab.runs import CheckpointError, latest_checkpoint, write_atomic
from lmlab.train.pretrain import pretrain
from lmlab.train.sft import sft

METRICS = ("exact_match", "char_accuracy", "edit_similarity", "gold_logprob_per_token")


def size_config(name: str, cfg: LadderConfig) -> RunConfig:
    """The pretraining config of one size: characters, context and batch as the small preset
    (the world's tasks are character-level); peak learning rate 3e-3 up to d_model 192, then
    2e-3 (small) and 1.5e-3 (medium)."""
    layers, heads, d = SIZES[name]
    lr = 3e-3 if d <= 192 else 2e-3 if d <= 256 else 1.5e-3
    return RunConfig(
        model=ModelConfig(
            vocab_size=4096, context_length=512, n_layer=layers, n_head=heads, d_model=d
        ),
        train=TrainConfig(
            batch_size=8,
            max_steps=cfg.steps,
            lr=lr,
            min_lr=lr / 10,
            warmup_steps=min(30, cfg.steps),
            eval_every=max(1, cfg.steps // 4),
            eval_iters=5,
            device=cfg.device,
        ),
        data=DataConfig(corpus=cfg.corpus, tokenizer="char"),
    )


def _has_checkpoint(run: Path) -> bool:

    try:
        latest_checkpoint(run)
    except (CheckpointError, FileNotFoundError):
        return False
    return (run / "config.json").is_file()


def _tokens_trained(run: Path) -> float:
    """Tokens the run trained on (its last metrics row)."""
    last: dict[str, Any] = {}
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "tokens" in row:
                last = row
    return float(last.get("tokens", 0.0))


def train_size(name: str, cfg: LadderConfig, out: Path, show_progress: bool = False) -> Path:
    """Pretrain and fine-tune one size into OUT/NAME/{base,sft}, reusing finished stages."""

    base, tuned = out / name / "base", out / name / "sft"
    if not _has_checkpoint(base):
        pretrain(size_config(name, cfg), base, show_progress=show_progress)
    if not _has_checkpoint(tuned):
        train = sft_train_config()
        train.max_steps = cfg.sft_steps
        train.eval_every = max(1, cfg.sft_steps // 4)
        train.eval_iters = 4
        train.warmup_steps = min(train.warmup_steps, cfg.sft_steps)
        train.device = cfg.device
        sft(base, tuned, train, SFTConfig(n_world=cfg.n_world), show_progress=show_progress)
    return tuned


def evaluate_size(name: str, cfg: LadderConfig, out: Path) -> list[dict[str, Any]]:
    """Rows (one per task spec) for the fine-tuned run of one size; cached in OUT/NAME."""

    cache = out / name / f"eval-n{cfg.n}-s{cfg.seed}.json"
    specs = cfg.specs()
    wanted = [s for ss in specs.values() for s in ss]
    if cache.is_file():
        rows = json.loads(cache.read_text())
        if sorted(r["spec"] for r in rows) == sorted(wanted):
            return rows
    run = out / name / "sft"
    model, tok, run_cfg = load_run(run, cfg.device)
    engine = Engine(model, tok, max_batch=32)
    counts = param_counts(run_cfg.model)
    tokens = _tokens_trained(out / name / "base") + _tokens_trained(run)
    flops = flops_per_token(run_cfg.model)["train"] * tokens
    rows = []
    for ability, ss in specs.items():
        for spec in ss:
            r = evaluate_task(engine, model, tok, spec, "direct", cfg.n, cfg.seed)
            rows.append(
                {
                    "size": name,
                    "params": counts["total"],
                    "non_embedding": counts["non_embedding"],
                    "train_tokens": tokens,
                    "train_flops": flops,
                    "ability": ability,
                    "spec": spec,
                    "exact_match": r["exact_match"],
                    "accuracy": r["accuracy"],
                    "char_accuracy": r["char_accuracy"],
                    "edit_similarity": 1.0 - r["edit_distance"],
                    "gold_logprob_per_token": r["gold_logprob_per_token"],
                }
            )
    write_atomic(cache, json.dumps(rows, indent=2) + "\n")
    return rows


def sharpness(values: list[float]) -> float:
    """Largest rise between adjacent sizes / total rise (min to max); NaN if flat."""
    if len(values) < 2:
        return math.nan
    rise = max(values) - min(values)
    if rise <= 1e-9:
        return math.nan
    return max(max(b - a for a, b in itertools.pairwise(values)), 0.0) / rise


def summarize(rows: list[dict[str, Any]], sizes: list[str]) -> list[dict[str, Any]]:
    """Per task spec: each metric along the ladder and its sharpness."""
    out = []
    for spec in dict.fromkeys(r["spec"] for r in rows):
        by_size = {r["size"]: r for r in rows if r["spec"] == spec}
        ladder = [s for s in sizes if s in by_size]
        entry: dict[str, Any] = {"spec": spec, "ability": by_size[ladder[0]]["ability"]}
        for m in METRICS:
            values = [by_size[s][m] for s in ladder]
            entry[m] = values
            entry[f"{m}_sharpness"] = sharpness(values)
        out.append(entry)
    return out


def sharpness_table(summary: list[dict[str, Any]], ladder: str) -> Table:
    """The summary as a table: per task spec, exact match and per-character accuracy along the
    ladder with their sharpness, and the gold log-likelihood per token."""
    table = Table(title=f"lmlab emergence {ladder}: sharpness (1 = one jump)")
    for col in ("spec", "exact match", "sharp", "char acc", "sharp", "gold logp/tok"):
        table.add_column(col, justify="left" if col == "spec" else "right")
    for e in summary:
        table.add_row(
            e["spec"],
            " ".join(f"{v:.2f}" for v in e["exact_match"]),
            f"{e['exact_match_sharpness']:.2f}",
            " ".join(f"{v:.2f}" for v in e["char_accuracy"]),
            f"{e['char_accuracy_sharpness']:.2f}",
            " ".join(f"{v:.2f}" for v in e["gold_logprob_per_token"]),
        )
    return table


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """One PNG per ability: metrics (columns) against parameters and training FLOPs (rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    paths = []
    for ability in dict.fromkeys(r["ability"] for r in rows):
        mine = [r for r in rows if r["ability"] == ability]
        fig, axes = plt.subplots(2, len(METRICS), figsize=(4 * len(METRICS), 7), squeeze=False)
        for i, x in enumerate(("params", "train_flops")):
            for j, m in enumerate(METRICS):
                ax = axes[i][j]
                for spec in dict.fromkeys(r["spec"] for r in mine):
                    pts = sorted((r[x], r[m]) for r in mine if r["spec"] == spec)
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=spec)
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide
                ax.set_xlabel("parameters" if x == "params" else "training FLOPs")
                ax.set_ylabel(m.replace("_", " "))
                ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        fig.suptitle(f"emergence: {ability} (exact match vs continuous metrics)")
        fig.tight_layout()
        path = out / f"emergence_{ability}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def run_ladder(
    cfg: LadderConfig, out: Path, show_progress: bool = False, report: Any = print
) -> dict[str, Any]:
    """Train (or reuse) every size, evaluate, summarise and plot; writes OUT/emergence.json."""

    cfg.validate()
    sizes = cfg.sizes()
    load_corpus(cfg.corpus)  # a bad corpus is refused before the study makes its folder
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name in sizes:
        report(f"[{name}] training (or reusing) {out / name}")
        train_size(name, cfg, out, show_progress)
        report(f"[{name}] evaluating")
        rows += evaluate_size(name, cfg, out)
    result = {"config": vars(cfg), "sizes": sizes, "rows": rows, "summary": summarize(rows, sizes)}
    result["plots"] = [str(p) for p in plot(rows, out)]
    write_atomic(out / "emergence.json", json.dumps(result, indent=2) + "\n")
    return result
