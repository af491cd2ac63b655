"""`lmlab moe-stats`: routing statistics of a trained MoE run on its validation batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_BATCH_SIZE, MAX_BATCHES, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.eval.routing import routing_table, run_routing_report
from lmlab.model.moe import plot_load


@dataclass
class MoEStatsArgs:
    """Routing statistics of a trained MoE run on its validation batches."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    batches: int = 20
    """Validation batches to route."""
    batch_size: int = 8
    """Sequences per batch."""
    png: Path | None = None
    """Where to write the load histogram (default RUN/moe_load.png; needs matplotlib)."""
    json: bool = False
    """Print the per-layer report as JSON instead of a table."""


def run(argv: list[str]) -> None:
    args = parse(MoEStatsArgs, argv, "lmlab moe-stats")
    check_count("--batches", args.batches, MAX_BATCHES)
    check_count("--batch-size", args.batch_size, MAX_BATCH_SIZE)
    report = run_routing_report(args.run, args.batches, args.batch_size)
    png = args.png or args.run / "moe_load.png"
    wrote = plot_load({args.run.name: report}, png)
    if args.json:
        console.print_json(data=report)
        return
    title = f"lmlab moe-stats: {args.run}  ({args.batches}x{args.batch_size} val sequences)"
    console.print(routing_table(report, title, png if wrote else None))
