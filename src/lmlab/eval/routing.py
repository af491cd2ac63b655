"""Routing statistics of a trained MoE run on its validation batches, and their table (what
`lmlab moe-stats` prints): per layer the expert load as bars, min/max load, CV, MaxVio,
router entropy and the mean balancing losses (`model/moe.py` computes them)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from lmlab.data.corpora import load_corpus
from lmlab.data.shards import Batches, build_shards
from lmlab.model.load import load_run
from lmlab.model.moe import routing_report

BARS = "▁▂▃▄▅▆▇█"


def run_routing_report(run: Path, batches: int, batch_size: int) -> list[dict[str, Any]]:
    """`routing_report` of the run's model over `batches` validation batches of its own corpus
    (`batch_size` sequences of its context length each)."""
    if batches < 1 or batch_size < 1:
        raise ValueError("--batches and --batch-size must be >= 1")
    model, tok, cfg = load_run(run)
    if not cfg.model.moe.n_experts:
        raise ValueError(f"{run} is a dense model (model.moe.n_experts is 0)")
    corpus = load_corpus(cfg.data.corpus, cfg.data.val_fraction, cfg.data.text_field)
    shards = build_shards(corpus, tok, show_progress=False)
    val = Batches(shards.val, cfg.model.context_length, cfg.train.seed)
    return routing_report(model, val.eval_batches(batches, batch_size))


def load_bars(load: list[float]) -> str:
    """One bar per expert; the top of the scale is twice the uniform load 1/E."""
    top = 2 / len(load)
    return "".join(BARS[min(len(BARS) - 1, int(v / top * len(BARS)))] for v in load)


def routing_table(report: list[dict[str, Any]], title: str, png: Path | None) -> Table:
    """One row per MoE layer; the caption explains the bars and says where the histogram went
    (`png` None: it was not drawn, matplotlib is missing)."""
    n_experts = len(report[0]["load"])
    table = Table(
        title=title,
        caption=f"load bars: one per expert, full height 2/E; max entropy ln E = "
        f"{math.log(n_experts):.2f}"
        + (f"; histogram written to {png}" if png else "; install matplotlib for the PNG"),
    )
    table.add_column("layer", justify="right")
    table.add_column("load per expert")
    for col in ("min %", "max %", "CV", "MaxVio", "entropy", "aux", "z"):
        table.add_column(col, justify="right")
    for r in report:
        table.add_row(
            str(r["layer"]),
            load_bars(r["load"]),
            f"{100 * min(r['load']):.1f}",
            f"{100 * max(r['load']):.1f}",
            f"{r['cv']:.3f}",
            f"{r['maxvio']:.3f}",
            f"{r['entropy']:.3f}",
            f"{r['aux_loss']:.4f}",
            f"{r['z_loss']:.4f}",
        )
    return table
