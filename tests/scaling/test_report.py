"""What `lmlab scaling` prints, built in `scaling/report.py`: fit lines and plan tables."""

from __future__ import annotations

from pathlib import Path

from lmlab.scaling.report import fit_lines, plan_estimate, plan_table, runs_table


def test_fit_lines_give_exponents_errors_and_the_interval() -> None:
    result = {
        "approach1": {"a": 0.5, "b": 0.5},
        "approach2": {"error": "too few budgets"},
        "approach3": {
            **{"a": 0.46, "b": 0.54, "E": 1.69, "A": 406.4, "B": 410.7},
            **{"alpha": 0.34, "beta": 0.28, "intervals": {"a": [0.4, 0.5]}},
        },
    }
    assert fit_lines(result) == [
        "approach1: a = 0.500  b = 0.500",
        "approach2: error: too few budgets",
        "approach3: a = 0.460  b = 0.540",
        "approach3: E=1.690 A=406.4 B=410.7 alpha=0.340 beta=0.280  95% CI a: [0.4, 0.5]",
    ]


def test_plan_and_run_tables() -> None:
    run = {"name": "r", "budget": 1e14, "params": 1000, "tokens": 20000, "steps": 10}
    plan = {
        "runs": [
            {**run, "flops": 1.1e14, "est_seconds": 90.0},
            {**run, "flops": 1e14, "est_seconds": None},
        ]
    }
    assert plan_table(plan, Path("p.json")).row_count == 2
    assert plan_estimate(plan) == "estimated total: 1.5 CPU-process minutes at 1 worker"
    rows = [{"run": "r", "params": 1000, "tokens": 20000, "loss": 3.0, "wall_s": None}]
    assert runs_table(rows, Path("s")).row_count == 1
