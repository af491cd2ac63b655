"""Tests for lmlab.experiments.sweep and lmlab.scaling.results: a tiny real sweep, skip and
resume, the results table, bad sweeps."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from lmlab.config import RunConfig
from lmlab.experiments.sweep import run_sweep
from lmlab.scaling.config import ScalingError
from lmlab.scaling.results import run_dir, sweep_points
from lmlab.train.pretrain import pretrain
from tests.conftest import plan_tiny_sweep


def test_sweep_results_table_and_curves(tiny_sweep: Path) -> None:
    sweep = tiny_sweep
    plan = json.loads((sweep / "plan.json").read_text())
    rows = [json.loads(x) for x in (sweep / "results.jsonl").read_text().splitlines()]
    assert [r["run"] for r in rows] == [r["name"] for r in plan["runs"]]
    for row, planned in zip(rows, plan["runs"], strict=True):
        assert row["tokens"] == planned["tokens"] and row["flops"] == planned["flops"]
        assert row["curve"][-1]["step"] == planned["steps"]
        assert row["loss"] == row["curve"][-1]["val_loss"] > 0
        metrics = (run_dir(sweep, row["run"]) / "metrics.jsonl").read_text().splitlines()
        assert json.loads(metrics[-1])["val_loss"] == row["loss"]
    with (sweep / "points.csv").open() as f:
        table = list(csv.DictReader(f))
    assert {"run", "params", "tokens", "loss", "flops", "budget"} <= table[0].keys()
    assert len(table) == 6
    pts = sweep_points(sweep)
    assert len(pts.curves) == 6 and pts.k > 6
    ne = sweep_points(sweep, "non_embedding")
    assert (ne.params < pts.params).all()


def test_rerun_skips_finished_runs(tiny_sweep: Path) -> None:
    sweep = tiny_sweep
    lines: list[str] = []
    before = (sweep / "results.jsonl").read_text()
    run_sweep(sweep, report=lines.append)
    assert lines == [f"sweep {sweep}: 6 runs, 6 finished, 0 to resume, 0 to start"]
    assert (sweep / "results.jsonl").read_text() == before


def test_resume_interrupted_and_restart_broken(tiny_sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(tiny_sweep, copy)
    plan = json.loads((copy / "plan.json").read_text())
    # Run 0: "killed" after its step-1 checkpoint (its config says the full length).
    r0 = plan["runs"][0]
    d0 = run_dir(copy, r0["name"])
    shutil.rmtree(d0)
    cfg = RunConfig.from_dict(r0["config"])
    cfg.train.max_steps = 1
    pretrain(cfg, d0, show_progress=False)
    (d0 / "config.json").write_text(json.dumps(r0["config"]))
    # Run 1: killed before its first checkpoint (config only).
    d1 = run_dir(copy, plan["runs"][1]["name"])
    shutil.rmtree(d1)
    d1.mkdir()
    (d1 / "config.json").write_text(json.dumps(plan["runs"][1]["config"]))
    lines: list[str] = []
    rows = run_sweep(copy, report=lines.append)
    assert lines[0] == f"sweep {copy}: 6 runs, 4 finished, 1 to resume, 1 to start"
    assert len(rows) == 6
    # Exact resume on CPU: the same losses as the uninterrupted sweep.
    original = [json.loads(x) for x in (tiny_sweep / "results.jsonl").read_text().splitlines()]
    for a, b in zip(rows, original, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["run"]


def test_run_dir_from_another_corpus(tiny_sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(tiny_sweep, copy)
    plan = json.loads((copy / "plan.json").read_text())
    path = run_dir(copy, plan["runs"][2]["name"]) / "config.json"
    cfg = json.loads(path.read_text())
    cfg["data"]["corpus"] = "python-stdlib"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ScalingError, match="was trained on corpus 'python-stdlib'"):
        run_sweep(copy)


def test_corpus_changed_since_plan(corpus_file: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text(corpus_file.read_text())
    out = tmp_path / "s"
    plan_tiny_sweep(corpus, out, budgets="2e7")
    corpus.write_text(corpus_file.read_text() + "# an edit\n")
    with pytest.raises(ScalingError, match="has changed since the sweep was planned"):
        run_sweep(out)


def test_not_a_sweep(tmp_path: Path) -> None:
    with pytest.raises(ScalingError, match="is not a sweep"):
        run_sweep(tmp_path)


def test_parallel_workers_reproduce_the_sequential_sweep(tiny_sweep: Path, tmp_path: Path) -> None:
    copy = tmp_path / "s"
    shutil.copytree(tiny_sweep, copy)
    plan = json.loads((copy / "plan.json").read_text())
    for r in plan["runs"][3:]:
        shutil.rmtree(run_dir(copy, r["name"]))
    lines: list[str] = []
    rows = run_sweep(copy, workers=2, report=lines.append)
    assert lines[0] == f"sweep {copy}: 6 runs, 3 finished, 0 to resume, 3 to start"
    assert sorted(x.split()[0] for x in lines[1:]) == ["[4/6]", "[5/6]", "[6/6]"]
    original = [json.loads(x) for x in (tiny_sweep / "results.jsonl").read_text().splitlines()]
    for a, b in zip(rows, original, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6), a["run"]
