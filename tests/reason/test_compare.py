"""The accuracy-vs-compute table: scoring, the Pareto frontier and the plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lmlab.data import world
from lmlab.infer import SamplingParams
from lmlab.model.transformer import FlopModel
from lmlab.reason import compare, plot
from lmlab.reason.compare import mark_pareto, settings_for
from tests.reason.fakes import ScriptedEngine


def test_pareto_frontier_is_over_flops_with_the_prefill() -> None:
    rows = [
        {"strategy": "a", "flops": 1e6, "tokens": 5.0, "accuracy": 0.2},
        {"strategy": "b", "flops": 5e6, "tokens": 50.0, "accuracy": 0.6},
        {"strategy": "c", "flops": 8e6, "tokens": 80.0, "accuracy": 0.5},  # dominated by b
        {"strategy": "d", "flops": 4e7, "tokens": 400.0, "accuracy": 0.6},  # same, more FLOPs
        {"strategy": "e", "flops": 4e7, "tokens": 400.0, "accuracy": 0.9},
        # fewer tokens generated than a but a long prompt: more FLOPs, so a dominates it
        {"strategy": "f", "flops": 2e7, "tokens": 4.0, "accuracy": 0.2},
    ]
    mark_pareto(rows)
    assert [r["strategy"] for r in rows if r["pareto"]] == ["a", "b", "e"]


def test_settings_for_keeps_what_a_strategy_has() -> None:
    s = {"k": 4, "breadth": 2, "task": "arith:2", "evaluator": None, "n_vote": 7}
    assert settings_for("sc@8", s) == {"k": 4, "task": "arith:2"}
    assert settings_for("tot", s) == {"k": 4, "breadth": 2, "task": "arith:2", "n_vote": 7}
    assert settings_for("direct", s) == {"task": "arith:2"}


def test_compare_scores_against_the_world_and_plots(tmp_path: Path) -> None:
    problems = world.generate("arith", 4, seed=0, split="test", digits=2, op="add")
    golds = {p.question: p.answer for p in problems}

    def reply(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
        gold = next(a for q, a in golds.items() if q in prompt)
        if "step by step" in prompt:
            return f"work\nAnswer: {gold if i % 3 else 0}", math.log(0.8)
        return "0", math.log(0.9)

    engine = ScriptedEngine(reply)
    rows = compare(engine, problems, ["direct", "sc@3"], {"task": "arith:2"})
    assert sum(r["prompt_tokens"] * r["n"] for r in rows) == engine.prefilled
    assert sum(r["tokens"] * r["n"] for r in rows) == engine.generated
    fm = FlopModel.of(engine)
    assert sum(r["flops"] * r["n"] for r in rows) == pytest.approx(
        sum(fm.request(p, g) for p, g in engine.requests)
    )
    assert rows[0]["accuracy"] == 0.0
    assert rows[1]["accuracy"] == 1.0  # 2 of 3 chains right in every vote
    assert rows[1]["tokens"] > rows[0]["tokens"]
    assert all(r["pareto"] for r in rows)
    assert rows[1]["stderr"] == pytest.approx(0.0)
    png = tmp_path / "p.png"
    plot(rows, png, "test")
    assert png.stat().st_size > 1000
