"""`lmlab run`: the whole life of a model in one command, then its report card."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.lab.config import PRESETS, preset
from lmlab.lab.pipeline import run_lab


@dataclass
class RunArgs:
    """Take a model through every stage of its life (tokenizer, pretraining, SFT, preferences,
    reward model, RL, evaluation, reasoning, scaling) and write report.md and report.html."""

    preset: str = "demo"
    """Recipe and sizes: demo (minutes on 2 CPU cores), cpu (about an hour), gpu, tiny (a check
    of the pipeline, learns nothing)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="DIR")] = None
    """Lab run directory (default runs/<preset>)."""
    resume: Annotated[Path | None, tyro.conf.arg(metavar="DIR")] = None
    """Continue the lab run in DIR: finished stages are skipped, the cut one resumes."""
    stages: list[str] | None = None
    """Stages to run, in order (default: every stage of the preset)."""
    seed: int = 0
    """Added to every stage's seed."""
    quiet: bool = False
    """No progress bars inside stages (the one line per stage stays)."""


def run(argv: list[str]) -> None:
    args = parse(RunArgs, argv, "lmlab run")
    stages = (
        [s.strip() for part in args.stages for s in part.split(",") if s.strip()]
        if args.stages
        else None
    )
    if args.resume is not None:
        run_lab(args.resume, stages=stages, resume=True, show_progress=not args.quiet)
        return
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    cfg = preset(args.preset)
    cfg.seed = args.seed
    out = args.out or Path("runs") / args.preset
    run_lab(out, cfg, stages, show_progress=not args.quiet)
