"""`lmlab generate`: completions of a prompt from the inference engine."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_SLOTS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import check_device, console
from lmlab.infer import Engine, SamplingParams


@dataclass
class GenerateArgs:
    """Generate completions of a prompt with the inference engine."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    prompt: str = ""
    """Text to continue (it follows <|bos|>)."""
    max_new_tokens: int = 64
    """Most tokens per completion."""
    temperature: float = 1.0
    """Sampling temperature (0 = greedy)."""
    top_k: int | None = None
    """Keep only the k most likely tokens."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most likely tokens up to this much probability."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the most likely one."""
    n: int = 1
    """Completions to generate (sharing one prefill)."""
    stop: list[str] = field(default_factory=list)
    """Stop strings (excluded from the output)."""
    seed: int = 0
    """Sampling seed."""
    json: bool = False
    """Print one JSON object per completion (text, token_ids, finish_reason, logprobs)."""
    device: str = "cpu"
    """cpu or cuda[:N]."""


def run(argv: list[str]) -> None:
    args = parse(GenerateArgs, argv, "lmlab generate")
    check_count("--n", args.n, MAX_SLOTS)  # n samples take n engine slots
    check_device(args.device)
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        n=args.n,
        stop=args.stop or None,
        seed=args.seed,
        logprobs=args.json,
    )
    params.validate(vocab_size=1 << 62, max_batch=args.n)  # fail before loading
    engine = Engine.from_checkpoint(args.run, args.device, max_batch=args.n)
    for i, out in enumerate(engine.generate([args.prompt], params)[0]):
        if args.json:
            print(json.dumps(dataclasses.asdict(out)))
            continue
        console.rule(f"completion {i + 1} ({out.finish_reason}, {len(out.token_ids)} tokens)")
        console.print(args.prompt + out.text, markup=False, highlight=False)
