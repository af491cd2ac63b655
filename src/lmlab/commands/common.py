"""What several commands share: the console they print to, the loop defaults of the preference
stages, the preset pre-parse and output-path checks (the argument parse itself, with
`--config FILE`, is `lmlab.commands.config_file.parse`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from lmlab.commands.config_file import config_path, read_settings
from lmlab.config import PRESETS, TrainConfig

console = Console()


def preset_name(argv: list[str]) -> str:
    """The `--preset` in argv, else in the `--config` file, else tiny; read before the full
    parse: the preset's settings are the defaults of every other flag."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    name = pre.parse_known_args(argv)[0].preset
    if name is None:
        path = config_path(argv)
        name = read_settings(path).get("preset", "tiny") if path is not None else "tiny"
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
    """Refuse, before any work, an output file whose folder does not exist."""
    for path in paths:
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"cannot write {path}: folder {path.parent} does not exist")
