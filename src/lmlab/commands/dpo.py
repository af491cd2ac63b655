"""`lmlab dpo`: Direct Preference Optimization from an SFT run on preference pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import train_defaults
from lmlab.config import TrainConfig
from lmlab.train import dpo


@dataclass
class DPOArgs:
    """Direct Preference Optimization from an SFT run on preference pairs."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run (policy init and frozen reference); not with --resume."""
    data: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Preference JSONL (required unless --resume)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (required unless --resume)."""
    beta: float = 0.1
    """DPO temperature beta."""
    train: TrainConfig = field(default_factory=lambda: train_defaults(200, 1e-5, 16))
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the DPO run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def run(argv: list[str]) -> None:
    args = parse(DPOArgs, argv, "lmlab dpo")
    if args.resume is not None:
        dpo.resume(args.resume, show_progress=not args.quiet)
        return
    if args.run is None or args.data is None or args.out is None:
        raise ValueError("lmlab dpo needs RUN, --data and --out (or --resume OUT)")
    dpo.train_dpo(
        args.run, args.data, args.out, args.train, args.beta, show_progress=not args.quiet
    )
