"""`lmlab report`: rebuild a lab run's report card from its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.args import parse
from lmlab.lab.pipeline import LAB_FILE
from lmlab.lab.report import rebuild


@dataclass
class ReportArgs:
    """(Re)build report.md and report.html of a lab run (`lmlab run`) from its files."""

    run: Annotated[Path, tyro.conf.Positional]
    """The lab run directory."""


def run(argv: list[str]) -> None:
    args = parse(ReportArgs, argv, "lmlab report")
    if not (args.run / LAB_FILE).is_file():
        raise ValueError(f"{args.run} is not a lab run (no {LAB_FILE})")
    md, page = rebuild(args.run)
    print(f"wrote {md} and {page}")
