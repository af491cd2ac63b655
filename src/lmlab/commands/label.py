"""`lmlab label`: a person labels preference pairs in the terminal (resumable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_NEW_TOKENS, MAX_PROBLEMS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.config import task_list
from lmlab.eval.annotate import label_session


@dataclass
class LabelArgs:
    """A person labels preferences: pick the better of two sampled answers (resumable)."""

    run: Annotated[Path, tyro.conf.Positional]
    """The run to sample answers from."""
    out: Path
    """JSONL the labels are appended to (re-run with the same file to resume)."""
    n: int = 50
    """Prompts to ask about."""
    tasks: list[str] = field(default_factory=lambda: ["chain", "strings"])
    """World task specs (space- or comma-separated), e.g. chain strings:op=reverse."""
    seed: int = 0
    """Seed of the prompts and samples."""
    max_new_tokens: int = 96
    """Longest answer."""


def run(argv: list[str]) -> None:
    args = parse(LabelArgs, argv, "lmlab label")
    check_count("--n", args.n, MAX_PROBLEMS)
    check_count("--max-new-tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    counts = label_session(
        args.run, args.out, args.n, task_list(args.tasks), args.seed, args.max_new_tokens
    )
    console.print_json(data=counts)
