"""`lmlab rm`: a Bradley-Terry reward model trained from an SFT run on preference pairs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import console, train_defaults
from lmlab.config import TrainConfig
from lmlab.train import reward


@dataclass
class RewardArgs:
    """Train a Bradley-Terry reward model from an SFT run on preference pairs."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run the reward model starts from; not with --resume."""
    data: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Preference JSONL ({"prompt", "chosen", "rejected"} rows; required unless --resume)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (required unless --resume)."""
    train: TrainConfig = field(default_factory=lambda: train_defaults(300, 1e-4, 16))
    val_fraction: float = 0.1
    """Held-out fraction of pairs."""
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the reward-model run in OUT (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def run(argv: list[str]) -> None:
    args = parse(RewardArgs, argv, "lmlab rm")
    if args.resume is not None:
        result = reward.resume(args.resume, show_progress=not args.quiet)
    else:
        if args.run is None or args.data is None or args.out is None:
            raise ValueError("lmlab rm needs RUN, --data and --out (or --resume OUT)")
        result = reward.train_reward_model(
            args.run, args.data, args.out, args.train, args.val_fraction, not args.quiet
        )
    console.print_json(data=result.summary)
