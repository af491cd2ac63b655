"""`lmlab ppo`: PPO against a reward model, with a KL penalty to the SFT reference."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.commands.common import train_defaults
from lmlab.config import PPOConfig, TrainConfig
from lmlab.train import ppo


@dataclass
class PPOArgs:
    """PPO against a reward model, with a KL penalty to the SFT reference."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """The SFT run (policy init and frozen reference); not with --resume."""
    reward: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Reward model run (`lmlab rm`); the value model starts from it (required unless --resume)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="PATH")] = None
    """Output run directory (the policy; `out/value` holds the value model; required unless
    --resume)."""
    ppo: Annotated[PPOConfig, tyro.conf.arg(name="")] = field(default_factory=PPOConfig)
    train: TrainConfig = field(default_factory=lambda: train_defaults(1, 1e-5, 1))
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the PPO run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress display."""


def run(argv: list[str]) -> None:
    args = parse(PPOArgs, argv, "lmlab ppo")
    if args.resume is not None:
        ppo.resume(args.resume, show_progress=not args.quiet)
        return
    if args.run is None or args.reward is None or args.out is None:
        raise ValueError("lmlab ppo needs RUN, --reward and --out (or --resume OUT)")
    ppo.train_ppo(
        args.run, args.reward, args.out, args.train, args.ppo, show_progress=not args.quiet
    )
