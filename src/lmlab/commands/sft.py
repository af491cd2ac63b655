"""`lmlab sft`: supervised fine-tuning of a run on chats (world tasks or a chat JSONL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.config import SFTConfig, TrainConfig, sft_train_config
from lmlab.train import sft


@dataclass
class SFTArgs:
    """Fine-tune a run on chats (world tasks or a chat JSONL file) into a new run directory."""

    run: Annotated[Path | None, tyro.conf.Positional, tyro.conf.arg(metavar="RUN")] = None
    """Base run directory (its latest checkpoint is fine-tuned); not with --resume."""
    sft: Annotated[SFTConfig, tyro.conf.arg(name="")] = field(default_factory=SFTConfig)
    train: TrainConfig = field(default_factory=sft_train_config)
    out: Path | None = None
    """Output run directory (default: RUN-sft next to the base run)."""
    resume: Annotated[Path | None, tyro.conf.arg(metavar="OUT")] = None
    """Continue the SFT run in OUT from its latest checkpoint (settings from its stage.json)."""
    quiet: bool = False
    """No progress bar."""


def run(argv: list[str]) -> None:
    args = parse(SFTArgs, argv, "lmlab sft")
    if args.resume is not None:
        sft.resume(args.resume, show_progress=not args.quiet)
        return
    if args.run is None:
        raise ValueError("give the base run to fine-tune (lmlab sft RUN), or --resume OUT")
    out = args.out or args.run.with_name(args.run.name + "-sft")
    sft.sft(args.run, out, args.train, args.sft, show_progress=not args.quiet)
