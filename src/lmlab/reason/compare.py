"""Accuracy against inference compute: run strategies on the same test problems, tabulate,
mark the Pareto frontier and plot it (matplotlib, PNG).

Compute is the forward FLOPs per question, prompt prefill included (few-shot exemplars, the
second stage of zero-shot CoT, tree-of-thoughts prefixes and evaluator prompts cost as much as
the tokens generated), so the frontier compares strategies by all the work the model did; the
tokens generated and the prompt tokens prefilled are shown beside it."""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lmlab.data.world import Problem
from lmlab.reason.base import EngineLike, ReasonError, Result, is_correct
from lmlab.reason.strategies import STRATEGIES, parse_strategy


def settings_for(spec: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings (None dropped) that the strategy named in `spec` has."""
    name = spec.strip().partition("@")[0]
    if name not in STRATEGIES:
        raise ReasonError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")
    known = {f.name for f in fields(STRATEGIES[name])}
    return {k: v for k, v in settings.items() if k in known and v is not None}


def score(
    spec: str, problems: Sequence[Problem], results: Sequence[Result], seconds: float
) -> dict[str, Any]:
    """One table row: accuracy (with its binomial standard error) and mean compute per question
    (FLOPs, tokens generated and prompt tokens prefilled)."""
    correct = [is_correct(p, r.answer) for p, r in zip(problems, results, strict=True)]
    n = len(correct)
    acc = sum(correct) / n
    row: dict[str, Any] = {
        "strategy": spec,
        "n": n,
        "accuracy": acc,
        "stderr": math.sqrt(acc * (1 - acc) / n),
        "answered": sum(r.answer is not None for r in results) / n,
        "tokens": statistics.fmean(r.compute.tokens for r in results),
        "max_tokens": max(r.compute.tokens for r in results),
        "prompt_tokens": statistics.fmean(r.compute.prompt_tokens for r in results),
        "flops": statistics.fmean(r.compute.flops for r in results),
        "seconds": round(seconds, 2),
    }
    stages = Counter(r.info["stage"] for r in results if "stage" in r.info)
    if stages:
        row["stages"] = dict(stages)
    return row


def run_strategy(
    engine: EngineLike,
    problems: Sequence[Problem],
    spec: str,
    settings: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], list[Result]]:
    """Run one strategy spec (e.g. `sc@8`) and score it."""
    strategy = parse_strategy(spec, **settings_for(spec, settings or {}))
    t0 = time.perf_counter()
    results = strategy.run(engine, list(problems))
    return score(spec, problems, results, time.perf_counter() - t0), results


def compare(
    engine: EngineLike,
    problems: Sequence[Problem],
    specs: Sequence[str],
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rows for every strategy spec (all checked before any runs), Pareto flags set."""
    if not specs:
        raise ReasonError("no strategies to compare; e.g. --compare direct,cot,sc@8,tot,adaptive")
    for spec in specs:
        parse_strategy(spec, **settings_for(spec, settings or {}))
    rows = [run_strategy(engine, problems, spec, settings)[0] for spec in specs]
    mark_pareto(rows)
    return rows


def widest_request(specs: Sequence[str], settings: dict[str, Any] | None = None) -> int:
    """The most samples any one engine request of these strategies asks for (chains, thoughts
    per state, evaluator replies): the engine needs at least that many slots."""
    return max(
        getattr(parse_strategy(spec, **settings_for(spec, settings or {})), name, 1)
        for spec in specs
        for name in ("k", "n_evaluate", "n_vote")
    )


def answer_records(problems: Sequence[Problem], results: Sequence[Result]) -> list[dict[str, Any]]:
    """Every question with its gold answer, the strategy's answer, whether it is correct, the
    tokens spent, the traces and the strategy's own notes (`Result.info`)."""
    return [
        {
            "question": p.question,
            "gold": p.answer,
            "answer": r.answer,
            "correct": is_correct(p, r.answer),
            "tokens": r.compute.tokens,
            "traces": r.traces,
            **r.info,
        }
        for p, r in zip(problems, results, strict=True)
    ]


def report(
    engine: EngineLike,
    problems: Sequence[Problem],
    specs: Sequence[str],
    settings: dict[str, Any] | None = None,
    compare_all: bool = True,
) -> dict[str, Any]:
    """`rows`: one scored row per strategy spec, Pareto flags set (`compare_all`), or the one
    strategy's row with `answers`, the record of every question (`compare_all` False)."""
    if compare_all:
        return {"rows": compare(engine, problems, specs, settings)}
    if len(specs) != 1:
        raise ReasonError(f"one strategy to report answers for, got {len(specs)}")
    row, results = run_strategy(engine, problems, specs[0], settings)
    return {"answers": answer_records(problems, results), "rows": [row]}


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Set `pareto` on each row: no other row is at least as accurate for at most the FLOPs
    (prefill included) with one of the two strictly better."""
    for r in rows:
        r["pareto"] = not any(
            o is not r
            and o["flops"] <= r["flops"]
            and o["accuracy"] >= r["accuracy"]
            and (o["flops"] < r["flops"] or o["accuracy"] > r["accuracy"])
            for o in rows
        )


def print_rows(rows: list[dict[str, Any]], title: str, console: Console | None = None) -> None:
    table = Table(title=title)
    cols = (
        "strategy",
        "accuracy",
        "GFLOPs/q",
        "gen tokens/q",
        "prompt tokens/q",
        "max gen",
        "seconds",
        "pareto",
    )
    for col in cols:
        table.add_column(col, justify="left" if col == "strategy" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["strategy"],
            f"{r['accuracy']:.3f} ± {r['stderr']:.3f}",
            f"{r['flops'] / 1e9:.3f}",
            f"{r['tokens']:.1f}",
            f"{r['prompt_tokens']:.1f}",
            str(r["max_tokens"]),
            f"{r['seconds']:.1f}",
            "*" if r.get("pareto") else "",
        )
    console = console or Console()
    if console.width < 120:  # never squeeze the figures into ellipses
        console = Console(width=120, file=console.file)
    console.print(table)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against FLOPs per question (prefill included; log x), each point labelled with
    its tokens generated per question, the frontier as a step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, r in enumerate(rows):
        ax.errorbar(
            r["flops"],
            r["accuracy"],
            yerr=r["stderr"],
            fmt="o",
            color="C0" if r.get("pareto") else "C7",
            capsize=3,
        )
        ax.annotate(
            f"{r['strategy']} ({r['tokens']:,.0f} tok)",
            (r["flops"], r["accuracy"]),
            textcoords="offset points",
            xytext=(5, 5 if i % 2 == 0 else -12),
            fontsize=8,
        )
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["flops"])
    if front:
        ax.step(
            [r["flops"] for r in front],
            [r["accuracy"] for r in front],
            where="post",
            color="C0",
            alpha=0.6,
            label="Pareto frontier",
        )
        ax.legend(loc="upper left")
    if all(r["flops"] > 0 for r in rows):
        ax.set_xscale("log")
    ax.set_xlabel("forward FLOPs per question, prefill included (in brackets: tokens generated)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
