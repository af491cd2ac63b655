"""`lmlab eval`: a run on world tasks through the engine, or its gold-judged win rate against
a baseline run (`--judge world`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from lmlab.bounds import MAX_NEW_TOKENS, MAX_PROBLEMS, MAX_SLOTS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import check_device, check_writable, console
from lmlab.config import task_list
from lmlab.eval.harness import check_strategy, evaluate, print_table
from lmlab.eval.judge import win_rate
from lmlab.infer import Engine
from lmlab.model.load import load_run
from lmlab.runs import write_atomic


@dataclass
class EvalArgs:
    """Evaluate a run on world tasks (held-out problems and phrasings) through the engine."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory."""
    tasks: list[str] = field(default_factory=lambda: ["arith:3", "chain", "strings", "icl"])
    """Task specs NAME[:PRIMARY][:KNOB=VALUE...], e.g. arith:3:op=add icl:k=8."""
    strategy: str = "direct"
    """'direct' (answer at once) or 'cot' (the user asks to think step by step)."""
    n: int = 100
    """Problems per task."""
    seed: int = 0
    """Seed of the test problems (and of sampling)."""
    batch_size: int = 32
    """Prompts generated together."""
    max_new_tokens: int | None = None
    """Generation budget per answer (default: twice the longest gold reply, within context; 96
    with --judge world)."""
    out: Path | None = None
    """Write the full report (metrics and example outputs) to this JSON file."""
    device: str = "cpu"
    """cpu or cuda[:N]."""
    judge: Literal["none", "world"] = "none"
    """'world': instead of accuracy, the gold-judged win rate of RUN against --baseline."""
    baseline: Path | None = None
    """The run to compare against with --judge world (e.g. the SFT run before RLHF)."""
    compile: bool = False
    """Generate with prepacked weights and a compiled decode step (docs/inference.md): compiling
    costs about 45 s on 2 CPU cores up front, then decoding is faster (not with --judge world)."""


def run(argv: list[str]) -> None:
    args = parse(EvalArgs, argv, "lmlab eval")
    check_count("--n", args.n, MAX_PROBLEMS)
    check_count("--batch-size", args.batch_size, MAX_SLOTS)
    if args.max_new_tokens is not None:
        check_count("--max-new-tokens", args.max_new_tokens, MAX_NEW_TOKENS)
    check_device(args.device)
    check_strategy(args.strategy)
    tasks = task_list(args.tasks)
    check_writable(args.out)
    if args.judge == "world":
        if args.compile:
            raise ValueError("--compile does not apply to --judge world")
        if args.baseline is None:
            raise ValueError("--judge world compares two runs: give --baseline RUN")
        report = win_rate(
            args.run,
            args.baseline,
            tasks,
            args.n,
            args.seed,
            max_new_tokens=args.max_new_tokens or 96,
        )
        console.print_json(data=report)
        if args.out is not None:
            write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        return
    model, tok, _ = load_run(args.run, args.device)
    engine = None
    if args.compile:
        engine = Engine(model, tok, max_batch=args.batch_size, compile=True, prepack=True)
        with console.status("compiling the decode step"):
            engine.warm_up()
    report = evaluate(
        model,
        tok,
        tasks,
        args.strategy,
        args.n,
        args.seed,
        args.max_new_tokens,
        args.batch_size,
        engine=engine,
    )
    report["run"] = str(args.run)
    print_table(report, console)
    if args.out is not None:
        write_atomic(args.out, json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {args.out}")
