"""`lmlab grpo`: GRPO on verifiable world rewards."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import console, train_defaults
from lmlab.config import GRPOConfig, TrainConfig
from lmlab.train import grpo


@dataclass
class GRPOArgs:
    """GRPO on verifiable world rewards."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run to improve; not with --resume."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (required unless --resume)."""
    grpo: Annotated[GRPOConfig, tyro.conf.arg(name="")] = field(default_factory=GRPOConfig)
    train: TrainConfig = field(default_factory=lambda: train_defaults(50, 1e-5, 1))
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the GRPO run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def run(argv: list[str]) -> None:
    args = parse(GRPOArgs, argv, "lmlab grpo")
    if args.resume is not None:
        result = grpo.resume(args.resume, show_progress=not args.quiet)
    else:
        if args.run is None or args.out is None:
            raise ValueError("lmlab grpo needs RUN and --out (or --resume OUT)")
        result = grpo.train_grpo(
            args.run, args.out, args.train, args.grpo, show_progress=not args.quiet
        )
    console.print_json(data=result.summary)
