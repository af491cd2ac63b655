"""`lmlab info`: parameter counts and FLOPs per token of a preset or a run directory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro
from rich.table import Table

from lmlab.commands.args import parse
from lmlab.commands.common import console, preset_name
from lmlab.config import ModelConfig, RunConfig, preset
from lmlab.model.transformer import accounting_rows
from lmlab.runs import CONFIG_FILE


@dataclass
class InfoArgs:
    """Parameter counts and FLOPs per token of a preset or a run directory."""

    run: Annotated[Path | None, tyro.conf.Positional] = None
    """A run directory (otherwise --preset and --model.* flags describe the model)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str = "tiny"
    """Named preset to describe."""


def run(argv: list[str]) -> None:
    name = preset_name(argv)
    default = InfoArgs(model=preset(name).model, preset=name)
    args = parse(InfoArgs, argv, "lmlab info", default=default)
    if args.run is not None:
        if args.model != default.model:
            raise ValueError(
                "--model.* flags describe a preset; a run is described by its own config"
            )
        if not (args.run / CONFIG_FILE).is_file():
            raise ValueError(f"{args.run} is not an lmlab run (no {CONFIG_FILE})")
        mcfg, title = RunConfig.load(args.run / CONFIG_FILE).model, str(args.run)
    else:
        mcfg, title = args.model, f"preset {args.preset}"
    mcfg.validate()
    table = Table(title=f"lmlab info: {title}", show_header=False)
    for label, value in accounting_rows(mcfg):
        table.add_row(label, value)
    console.print(table)
