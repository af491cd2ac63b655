"""Scaling fixtures: a tiny plan config and one tiny finished sweep shared by the tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lmlab.scaling.config import PlanConfig
from lmlab.scaling.plan import make_plan, resolve_corpus, write_plan
from lmlab.scaling.run import run_sweep


def tiny_plan_config(corpus: Path, **kw: object) -> PlanConfig:
    base: dict[str, object] = dict(
        corpus=str(corpus),
        tokenizer="char",
        context_length=32,
        head_dim=8,
        aspect=16,
        batch_size=2,
        min_steps=2,
        evals=2,
        eval_iters=1,
        probe_steps=0,
        sizes=3,
        budgets="3e7,1e8",
    )
    base.update(kw)
    return PlanConfig(**base)  # type: ignore[arg-type]


def plan_tiny_sweep(corpus: Path, out: Path, **kw: object) -> dict[str, Any]:
    cfg = tiny_plan_config(corpus, **kw)
    plan = make_plan(cfg, resolve_corpus(cfg))
    write_plan(plan, out)
    return plan


@pytest.fixture(scope="session")
def tiny_sweep(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 budgets x 3 sizes, 2-30 optimizer steps of 64 tokens per run, run to the end.
    Tests that change it work on a copy."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    plan = plan_tiny_sweep(corpus_file, out, budgets="2e7,4e7")
    assert max(r["steps"] for r in plan["runs"]) <= 30
    lines: list[str] = []
    rows = run_sweep(out, workers=1, report=lines.append)
    assert len(rows) == 6 and lines[-1].startswith("[6/6]")
    return out
