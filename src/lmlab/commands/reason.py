"""`lmlab reason`: answer world test problems with a reasoning strategy, or compare strategies'
accuracy against the compute they spend.

The knob flags come from the world families' `Knob`s and the strategy flags from the fields of
the strategy dataclasses (`reason/strategies.py`): a setting added there is a flag here."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from lmlab.bounds import MAX_PROBLEMS, MAX_SLOTS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import check_device, check_writable, console
from lmlab.commands.flags import knob_flags, strategy_flags
from lmlab.data import world
from lmlab.infer import Engine
from lmlab.reason.compare import plot, print_rows, report, settings_for, widest_request
from lmlab.reason.strategies import STRATEGIES, parse_strategy
from lmlab.reason.tot import reward_model_fn
from lmlab.runs import write_atomic

ReasonKnobs = knob_flags("ReasonKnobs", ("digits", "steps", "numbers"))
StrategySettings = strategy_flags(
    "StrategySettings",
    STRATEGIES,
    # set by this command: the task spec and seed from its own flags, the reward scorer from
    # --reward, and the weighted vote by the strategy's name (sc-weighted)
    exclude=("task", "seed", "reward_fn", "weighted"),
    aliases={"k": ("-k",)},
)


@dataclass
class ReasonArgs:
    """Answer world test problems with a reasoning strategy, or compare strategies' accuracy
    against the compute they spend (FLOPs with the prompt prefill, tokens generated)."""

    run: Annotated[Path, tyro.conf.Positional]
    """Run directory (a model fine-tuned on the world, e.g. by `lmlab sft`)."""
    task: str = "arith"
    """Task spec NAME[:PRIMARY][:KNOB=VALUE...], e.g. arith:4, countdown:numbers=4."""
    strategy: str = "direct"
    """direct, cot, fewshot-cot, sc, sc-weighted, tot or adaptive (NAME@N sets k, shots or
    breadth, e.g. sc@8)."""
    compare: str | None = None
    """Comma-separated strategies to compare instead, e.g. direct,cot,sc@8,tot,adaptive."""
    n: int = 100
    """Test problems."""
    reward: Path | None = None
    """Reward model run (`lmlab rm`) for --evaluator reward."""
    seed: int = 0
    """Seed of the test problems and of sampling."""
    plot: Path | None = None
    """With --compare: write the accuracy-vs-compute Pareto plot (PNG) here."""
    out: Path | None = None
    """Write the rows (and, for one strategy, every answer) as JSON here."""
    device: str = "cpu"
    """cpu or cuda[:N]."""
    batch_size: int = 64
    """Engine slots (sequences decoded together)."""
    knobs: Annotated[ReasonKnobs, tyro.conf.arg(name="")] = field(default_factory=ReasonKnobs)
    settings: Annotated[StrategySettings, tyro.conf.arg(name="")] = field(
        default_factory=StrategySettings
    )


def run(argv: list[str]) -> None:
    args = parse(ReasonArgs, argv, "lmlab reason")
    given = {k: v for k, v in dataclasses.asdict(args.knobs).items() if v is not None}
    spec = ":".join([args.task, *(f"{k}={v}" for k, v in given.items())])
    name, values = world.parse_task(spec)
    check_count("--n", args.n, MAX_PROBLEMS)
    check_count("--batch-size", args.batch_size, MAX_SLOTS)
    check_device(args.device)
    check_writable(args.plot, args.out)
    if args.plot is not None and args.compare is None:
        raise ValueError("--plot needs --compare (a plot of one strategy is one point)")
    settings = {"task": spec, "seed": args.seed, **dataclasses.asdict(args.settings)}
    specs = [s.strip() for s in (args.compare or args.strategy).split(",") if s.strip()]
    for s in specs:  # every setting given must mean something to a strategy run
        parse_strategy(s, **settings_for(s, settings))
    if args.compare is None:
        extra = set(settings) - set(settings_for(specs[0], settings)) - {"seed", "task"}
        given_extra = sorted(k for k in extra if settings[k] is not None)
        if given_extra:
            flag = given_extra[0].replace("_", "-")
            raise ValueError(f"strategy {specs[0]} has no setting --{flag}")
    _check_evaluator_flags(args, settings)
    problems = world.generate(name, args.n, seed=args.seed, split="test", **values)
    slots = max(args.batch_size, widest_request(specs, settings))
    engine = Engine.from_checkpoint(args.run, args.device, max_batch=slots)
    title = f"lmlab reason {spec}  n={args.n}"
    result = {
        "run": str(args.run),
        "task": spec,
        "n": args.n,
        "seed": args.seed,
        **report(engine, problems, specs, settings, compare_all=args.compare is not None),
    }
    if args.plot is not None:
        plot(result["rows"], args.plot, title)
    print_rows(result["rows"], title, console)
    if args.plot is not None:
        console.print(f"wrote {args.plot}")
    if args.out is not None:
        write_atomic(args.out, json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.out}")


def _check_evaluator_flags(args: ReasonArgs, settings: dict[str, object]) -> None:
    """Flags that only mean something with one tree-of-thoughts evaluator; --reward becomes
    the reward evaluator's scorer."""
    evaluator = settings.get("evaluator")
    if evaluator == "reward":
        if args.reward is None:
            raise ValueError("--evaluator reward needs --reward RUN (a reward model run)")
        settings["reward_fn"] = reward_model_fn(args.reward)
    elif args.reward is not None:
        raise ValueError("--reward is only used with --evaluator reward")
    if settings.get("n_evaluate") is not None and evaluator not in (None, "value"):
        raise ValueError("--n-evaluate is only used with --evaluator value")
    if settings.get("n_vote") is not None and evaluator != "vote":
        raise ValueError("--n-vote is only used with --evaluator vote")
