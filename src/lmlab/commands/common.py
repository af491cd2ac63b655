"""What several commands share: the console they print to, the loop defaults of the preference
stages, the preset pre-parse and output-path checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from lmlab.config import PRESETS, TrainConfig
from lmlab.runs import check_output_file

console = Console()


def preset_name(argv: list[str]) -> str:
    """The `--preset` in argv (default tiny), read before the full parse: the preset's settings
    are the defaults of every other flag."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="tiny")
    name = pre.parse_known_args(argv)[0].preset
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return name


def train_defaults(max_steps: int, lr: float, batch_size: int) -> TrainConfig:
    """Loop settings of a preference stage (rm, dpo, grpo, ppo): a short warmup, a 10x cosine
    decay and five evaluations over the run."""
    return TrainConfig(
        max_steps=max_steps,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=10,
        batch_size=batch_size,
        eval_every=max(1, max_steps // 5),
    )


def check_writable(*paths: Path | None) -> None:
    """Refuse, before any work, an output file that is a directory or whose folder is missing
    or cannot be written (`lmlab.runs.check_output_file`)."""
    for path in paths:
        if path is not None:
            check_output_file(path)
