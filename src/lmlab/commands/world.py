"""`lmlab world`: show task-world problems (`world sample`) or list the families (`world list`).

The knob flags (`--digits`, `--op`, ...) are generated from the families' own `Knob`s."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Annotated, Literal

import tyro
from rich.table import Table

from lmlab.bounds import MAX_PROBLEMS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.commands.flags import knob_flags
from lmlab.data import world
from lmlab.data.world.catalog import family_rows

USAGE = "usage: lmlab world sample [--task T --n N ...] | lmlab world list"

WorldKnobs = knob_flags("WorldKnobs")


@dataclass
class WorldSampleArgs:
    """Show generated task-world problems with their worked solutions."""

    task: str = "arith"
    """Task family (arith, chain, countdown, strings, icl) or a spec such as arith:3:op=add."""
    n: int = 3
    """Number of problems."""
    seed: int = 0
    """Generation seed (the same seed gives the same problems)."""
    split: Literal["train", "test"] = "train"
    """'test' shows held-out problems in held-out phrasings (what eval uses)."""
    json: bool = False
    """Print one JSON object per problem instead of text."""
    knobs: Annotated[WorldKnobs, tyro.conf.arg(name="")] = field(default_factory=WorldKnobs)


def run(argv: list[str]) -> None:
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return
    if not argv or argv[0] not in ("sample", "list"):
        raise ValueError(USAGE)
    if argv[0] == "list":
        table = Table(title="lmlab world: task families")
        for col in ("task", "what", "knobs (default, range)"):
            table.add_column(col)
        for row in family_rows():
            table.add_row(*row)
        console.print(table)
        return
    args = parse(WorldSampleArgs, argv[1:], "lmlab world sample")
    check_count("--n", args.n, MAX_PROBLEMS)
    given = {k: v for k, v in dataclasses.asdict(args.knobs).items() if v is not None}
    spec = args.task + "".join(f":{k}={v}" for k, v in given.items())
    name, knobs = world.parse_task(spec)
    problems = world.generate(name, args.n, seed=args.seed, split=args.split, **knobs)
    for i, p in enumerate(problems):
        if args.json:
            print(json.dumps(dataclasses.asdict(p)))
            continue
        console.rule(f"{name} {i + 1}/{args.n}  ({args.split}, key {p.key})")
        console.print(f"Q: {p.question}\nA: {p.answer}\n\n{p.trace}", markup=False, highlight=False)
