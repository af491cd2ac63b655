"""What several commands share: the console they print to, the loop defaults of the preference
stages, the preset pre-parse and the checks of flags that several commands read the same way
(output paths, devices). The argument parse itself (with `--config FILE` and one-line errors) is
`lmlab.commands.args.parse`."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console

from lmlab.commands.config_file import config_path, read_settings
from lmlab.config import PRESETS, TrainConfig
from lmlab.runs import check_output_file

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
    """Refuse, before any work, an output file that is a directory or whose folder is missing
    or cannot be written (`lmlab.runs.check_output_file`)."""
    for path in paths:
        if path is not None:
            check_output_file(path)


def check_device(spec: str, flag: str = "--device") -> str:
    """`spec` if it names a device this machine has (cpu, cuda, cuda:N, mps), else a one-line
    ValueError, before anything is loaded onto it."""
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"{flag} {spec!r} is not a device; use cpu or cuda[:N]") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if (device.index or 0) >= count:
            raise ValueError(f"{flag} {spec}: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{flag} {spec}: MPS is not available on this machine")
    elif device.type != "cpu":
        raise ValueError(f"{flag} {spec!r} is not supported; use cpu or cuda[:N]")
    return spec
