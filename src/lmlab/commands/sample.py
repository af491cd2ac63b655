"""`lmlab sample`: print samples from a trained run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_NEW_TOKENS, MAX_SLOTS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
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
    check_count("--n", args.n, MAX_SLOTS)  # n samples take n engine slots
    check_count("--max-new-tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        n=args.n,
        seed=args.seed,
    )
    params.validate(vocab_size=1 << 62, max_batch=args.n)  # fail before loading
    engine = Engine.from_checkpoint(args.run, max_batch=args.n)
    for i, out in enumerate(engine.generate([args.prompt], params)[0]):
        console.rule(f"sample {i + 1}")
        console.print(args.prompt + out.text, markup=False, highlight=False)
