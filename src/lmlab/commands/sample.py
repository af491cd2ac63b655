"""`lmlab sample`: print samples from a trained run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.commands.common import console
from lmlab.commands.config_file import parse
from lmlab.infer import Engine, SamplingParams


@dataclass
class SampleArgs:
    """Print samples from a trained run."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    prompt: str = ""
    """Text to continue (empty: start from <|bos|>)."""
    max_new_tokens: int = 100
    """Tokens to generate per sample."""
    temperature: float = 0.8
    """Sampling temperature (0 = greedy)."""
    top_k: int | None = 50
    """Sample among the k most likely tokens."""
    n: int = 1
    """Number of samples."""
    seed: int = 0
    """Sampling seed."""


def run(argv: list[str]) -> None:
    args = parse(SampleArgs, argv, "lmlab sample")
    engine = Engine.from_checkpoint(args.run)
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        n=args.n,
        seed=args.seed,
    )
    for i, out in enumerate(engine.generate([args.prompt], params)[0]):
        console.rule(f"sample {i + 1}")
        console.print(args.prompt + out.text, markup=False, highlight=False)
