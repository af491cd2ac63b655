"""`lmlab emergence`: a ladder of model sizes, exact match against continuous metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.experiments.config import LadderConfig
from lmlab.experiments.emergence import run_ladder, sharpness_table
from lmlab.runs import check_output_dir


@dataclass
class EmergenceArgs:
    """Train (or reuse) a ladder of model sizes alike and plot exact match against continuous
    metrics over parameters and training FLOPs (Schaeffer et al. 2023)."""

    out: Path
    """Study directory: OUT/SIZE/{base,sft}, emergence.json and the PNGs."""
    ladder: Annotated[LadderConfig, tyro.conf.arg(name="")] = field(default_factory=LadderConfig)
    quiet: bool = False
    """No progress bars."""


def run(argv: list[str]) -> None:
    args = parse(EmergenceArgs, argv, "lmlab emergence")
    check_output_dir(args.out)  # before hours of training
    result = run_ladder(args.ladder, args.out, not args.quiet, report=console.print)
    console.print(sharpness_table(result["summary"], args.ladder.ladder))
    console.print(f"wrote {args.out / 'emergence.json'} and {len(result['plots'])} plots")
