"""`lmlab scaling`: plan a sweep, run it, fit Chinchilla's approaches 1-3, predict."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import tyro

from lmlab.bounds import MAX_REFITS, MAX_WORKERS, check_count
from lmlab.commands.args import parse
from lmlab.commands.common import console
from lmlab.experiments.sweep import run_sweep
from lmlab.runs import check_output_dir
from lmlab.scaling.config import PlanConfig
from lmlab.scaling.plan import check_plan_out, make_plan, resolve_corpus, write_plan
from lmlab.scaling.report import (
    default_out,
    fit_lines,
    fit_source,
    plan_estimate,
    plan_table,
    plan_validation,
    predict,
    runs_table,
)

USAGE = "usage: lmlab scaling plan|run|fit|predict ... (--help after the verb)"


@dataclass
class ScalingPlanArgs:
    """Plan a scaling sweep: per FLOP budget, a ladder of shapes and their token counts."""

    out: Path
    """Sweep directory (plan.json is written there; runs go to OUT/runs/NAME)."""
    plan: Annotated[PlanConfig, tyro.conf.arg(name="")] = field(default_factory=PlanConfig)


@dataclass
class ScalingRunArgs:
    """Run (or resume) every unfinished run of a sweep."""

    sweep: Annotated[Path, tyro.conf.Positional]
    """Sweep directory made by `lmlab scaling plan`."""
    workers: int = 1
    """Runs trained at the same time, each in its own process."""
    threads: int | None = None
    """Torch threads per worker (default 1: for small models, use --workers instead)."""


@dataclass
class ScalingFitArgs:
    """Fit Chinchilla's approaches 1-3 to a sweep or a points CSV (params,tokens,loss)."""

    src: Annotated[Path, tyro.conf.Positional]
    """Sweep directory or CSV with columns params, tokens, loss (optional flops, budget, run)."""
    out: Path | None = None
    """Where summary.json and the PNGs go (default SRC/fit, or SRC-fit next to a CSV)."""
    count: Literal["total", "non_embedding"] | None = None
    """Sweeps only: count all parameters or the non-embedding ones (default: as planned)."""
    bootstrap: int = 200
    """Bootstrap refits for Approach 3's intervals (0: none)."""
    seed: int = 0
    """Bootstrap seed."""
    starts: int = 32
    """Approach 3: L-BFGS runs from this many of the best grid initialisations."""
    plots: bool = True
    """Write the PNG plots."""
    json: bool = False
    """Print summary.json's object as the last line."""


@dataclass
class ScalingPredictArgs:
    """Compute-optimal and inference-aware model for a budget, from a fitted source."""

    src: Annotated[Path, tyro.conf.Positional]
    """Sweep directory or points CSV."""
    budget: float
    """Training FLOP budget C."""
    inference_tokens: float = 0.0
    """Tokens the model will process at inference over its life (Sardana et al. 2023)."""
    count: Literal["total", "non_embedding"] | None = None
    """Sweeps only: parameter counting (default: as planned)."""
    bootstrap: int = 200
    """Bootstrap refits for the tokens-per-parameter interval."""
    seed: int = 0
    """Bootstrap seed."""
    starts: int = 32
    """Approach 3: L-BFGS runs from this many of the best grid initialisations."""
    out: Path | None = None
    """Sweeps only: plan one validation run at the predicted optimum into this directory
    (then `lmlab scaling run OUT` trains it and prints predicted vs measured loss)."""
    json: bool = False
    """Print the prediction as JSON on the last line."""


def plan_verb(argv: list[str]) -> None:
    args = parse(ScalingPlanArgs, argv, "lmlab scaling plan")
    args.plan.validate()
    check_plan_out(args.out)  # before the corpus is read and the shapes are timed
    sweep = make_plan(args.plan, resolve_corpus(args.plan))
    path = write_plan(sweep, args.out)
    console.print(plan_table(sweep, path))
    console.print(plan_estimate(sweep))


def _check_refits(bootstrap: int, starts: int) -> None:
    check_count("--bootstrap", bootstrap, MAX_REFITS, low=0)
    check_count("--starts", starts, MAX_REFITS)


def run_verb(argv: list[str]) -> None:
    args = parse(ScalingRunArgs, argv, "lmlab scaling run")
    check_count("--workers", args.workers, MAX_WORKERS)
    if args.threads is not None:
        check_count("--threads", args.threads, MAX_WORKERS)
    rows = run_sweep(args.sweep, args.workers, args.threads, report=console.print)
    console.print(runs_table(rows, args.sweep))
    console.print(f"{len(rows)} finished runs in {args.sweep / 'points.csv'}")


def fit_verb(argv: list[str]) -> None:
    args = parse(ScalingFitArgs, argv, "lmlab scaling fit")
    _check_refits(args.bootstrap, args.starts)
    if args.out is not None:
        check_output_dir(args.out)
    result, _, _ = fit_source(
        args.src, args.out, args.count, args.bootstrap, args.seed, args.plots, args.starts
    )
    for line in fit_lines(result):
        console.print(line)
    written = args.out or default_out(args.src)
    console.print(
        f"wrote {written / 'summary.json'}" + (" and the PNG plots" if args.plots else "")
    )
    if args.json:
        print(json.dumps(result))


def predict_verb(argv: list[str]) -> None:
    args = parse(ScalingPredictArgs, argv, "lmlab scaling predict")
    _check_refits(args.bootstrap, args.starts)
    if args.inference_tokens < 0:
        raise ValueError("--inference-tokens must be >= 0")
    if args.out is not None and not args.src.is_dir():
        raise ValueError("--out (a validation run) needs a sweep directory as SRC")
    if args.out is not None:
        check_plan_out(args.out)
    _, _, fits = fit_source(
        args.src, None, args.count, args.bootstrap, args.seed, plots=False, n_starts=args.starts
    )
    result = predict(fits, args.budget, args.inference_tokens)
    if args.out is not None:
        result["validation_run"] = plan_validation(
            args.src, fits, args.budget, args.out, args.count
        )
    console.print_json(data=result)
    if args.json:
        print(json.dumps(result))


VERBS = {"plan": plan_verb, "run": run_verb, "fit": fit_verb, "predict": predict_verb}


def run(argv: list[str]) -> None:
    if argv in (["-h"], ["--help"]):
        print(USAGE)
        return
    if not argv or argv[0] not in VERBS:
        raise ValueError(USAGE)
    VERBS[argv[0]](argv[1:])
