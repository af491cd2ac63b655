"""`lmlab prefs`: sample k responses per world prompt and label pairs with the world's gold
annotator (the preference data of `lmlab rm` and `lmlab dpo`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_NEW_TOKENS, MAX_PROBLEMS, MAX_SAMPLES, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.config import task_list
from lmlab.data.prefs import DEFAULT_MARGIN
from lmlab.eval.annotate import generate_prefs


@dataclass
class PrefsArgs:
    """Sample k responses per world prompt and label pairs with the world's gold annotator."""

    run: Annotated[Path, tyro.conf.Positional]
    """The (SFT) run to sample from."""
    out: Path
    """Output JSONL of {"prompt", "chosen", "rejected", ...} rows."""
    tasks: list[str] = field(default_factory=lambda: ["chain", "strings"])
    """World task specs (space- or comma-separated), e.g. chain strings:op=reverse."""
    n_prompts: int = 2000
    """Prompts to sample."""
    k: int = 4
    """Responses per prompt."""
    annotator: str = "world"
    """Who labels the pairs (world: the programmatic gold preference)."""
    noise: float = 0.0
    """Probability of flipping a label (human disagreement)."""
    margin: float = DEFAULT_MARGIN
    """Gold difference below which two responses are a tie and make no pair."""
    temperature: float = 1.0
    """Sampling temperature."""
    max_new_tokens: int = 96
    """Longest response."""
    seed: int = 0
    """Seed for prompts, sampling and noise."""
    quiet: bool = False
    """No progress display."""


def run(argv: list[str]) -> None:
    args = parse(PrefsArgs, argv, "lmlab prefs")
    check_count("--n-prompts", args.n_prompts, MAX_PROBLEMS)
    check_count("--k", args.k, MAX_SAMPLES, low=2)
    check_count("--max-new-tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    if args.annotator != "world":
        raise ValueError(
            f"unknown annotator {args.annotator!r}: use world here, `lmlab label` for a person"
        )
    summary = generate_prefs(
        args.run,
        task_list(args.tasks),
        args.n_prompts,
        args.k,
        args.out,
        args.noise,
        args.seed,
        args.temperature,
        args.max_new_tokens,
        args.margin,
        show_progress=not args.quiet,
    )
    console.print_json(data=summary)
