"""Tests for `lmlab scaling`: plan/run/fit/predict end to end, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmlab.cli import main
from tests.conftest import user_error
from tests.scaling.test_fit import chinchilla_loss

TINY = [
    "--tokenizer",
    "char",
    "--context-length",
    "32",
    "--head-dim",
    "8",
    "--aspect",
    "16",
    "--batch-size",
    "2",
    "--min-steps",
    "2",
    "--evals",
    "2",
    "--eval-iters",
    "1",
    "--probe-steps",
    "0",
    "--sizes",
    "3",
]


def _write_csv(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = ["run,params,tokens,loss,flops"]
    for c in (1e18, 1e19, 1e20):
        for n in np.geomspace(5e7, 5e9, 7) * (c / 1e19) ** 0.5:
            d = c / (6 * n)
            loss = float(chinchilla_loss(n, d)) * float(np.exp(rng.normal(0, 0.003)))
            rows.append(f"r{len(rows)},{n:.6g},{d:.6g},{loss:.6f},{c:.6g}")
    path.write_text("\n".join(rows) + "\n")


def test_fit_csv_summary_json_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "points.csv"
    _write_csv(src)
    out = tmp_path / "fit"
    assert main(["scaling", "fit", str(src), "--out", str(out), "--bootstrap", "5", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((out / "summary.json").read_text())
    assert last == summary
    for name in ("approach1", "approach2"):
        assert {"a", "b"} <= summary[name].keys()
    a3 = summary["approach3"]
    assert {"E", "A", "B", "alpha", "beta", "a", "b", "intervals"} <= a3.keys()
    for k in ("E", "A", "B", "alpha", "beta", "a", "b"):
        lo, hi = a3["intervals"][k]
        assert lo <= hi
    assert summary["approach2"]["a"] == pytest.approx(0.513, rel=0.05)
    assert a3["a"] == pytest.approx(0.513, rel=0.05)
    for png in ("isoflop.png", "frontier.png", "surface.png", "inference.png"):
        assert (out / png).stat().st_size > 10_000


def test_predict_inference_aware(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "points.csv"
    _write_csv(src)
    argv = ["scaling", "predict", str(src), "--budget", "1e22", "--bootstrap", "0", "--json"]
    assert main([*argv, "--inference-tokens", "0"]) == 0
    base = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*argv, "--inference-tokens", "1e14"]) == 0
    heavy = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    a3 = base["approach3"]
    assert a3["n_opt"] * a3["d_opt"] * 6 == pytest.approx(1e22, rel=1e-4)  # CSV: 6 digits
    assert base["inference_aware"]["n_ratio"] == pytest.approx(1.0, rel=1e-3)
    assert heavy["inference_aware"]["n_ratio"] < 1 < heavy["inference_aware"]["d_train_ratio"]
    assert heavy["inference_aware"]["saving"] > 0


def test_plan_run_fit_predict_sweep(
    corpus_file: Path, tiny_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    shutil.copytree(tiny_sweep, sweep)
    # The same plan again is accepted (nothing started is lost) and the run skips every run.
    assert (
        main(
            [
                "scaling",
                "plan",
                "--corpus",
                str(corpus_file),
                *TINY,
                "--budgets",
                "2e7,4e7",
                "--out",
                str(sweep),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["scaling", "run", str(sweep)]) == 0
    assert "6 runs, 6 finished" in " ".join(capsys.readouterr().out.split())
    fast = ["--starts", "2"]  # 6 noisy points from a few steps each: any fit will do here
    assert main(["scaling", "fit", str(sweep), "--bootstrap", "2", *fast, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary == json.loads((sweep / "fit" / "summary.json").read_text())
    assert summary["n_points"] == 6 and summary["count"] == "total"
    assert {"approach1", "approach2", "approach3"} <= summary.keys()
    assert (
        main(
            [
                "scaling",
                "fit",
                str(sweep),
                "--count",
                "non_embedding",
                "--no-plots",
                "--bootstrap",
                "0",
                *fast,
                "--out",
                str(tmp_path / "ne"),
                "--json",
            ]
        )
        == 0
    )
    ne = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        ne["count"] == "non_embedding"
        and ne["flops_per_param_token"] > summary["flops_per_param_token"]
    )
    # A validation run at 4x the largest budget, at the predicted optimum.
    val = tmp_path / "val"
    assert (
        main(
            [
                "scaling",
                "predict",
                str(sweep),
                "--budget",
                "1.6e8",
                "--bootstrap",
                "0",
                *fast,
                "--out",
                str(val),
                "--json",
            ]
        )
        == 0
    )
    pred = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = pred["validation_run"]
    assert abs(run["flops"] / 1.6e8 - 1) < 0.05 and run["predicted_loss"] > 0
    plan = json.loads((val / "plan.json").read_text())
    assert plan["corpus"] == str(corpus_file) and len(plan["runs"]) == 1


def test_bad_input_is_one_line(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("params,loss\n1e6,3.0\n")
    assert "lacks column(s) tokens" in user_error(capsys, ["scaling", "fit", str(bad)])
    bad.write_text("params,tokens,loss\n1e6,1e7,0\n")
    assert "loss must be a positive number" in user_error(capsys, ["scaling", "fit", str(bad)])
    assert "too small for the smallest shape" in user_error(
        capsys,
        [
            "scaling",
            "plan",
            "--corpus",
            str(corpus_file),
            *TINY,
            "--budgets",
            "1e3",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert "is not a sweep" in user_error(capsys, ["scaling", "run", str(tmp_path)])
    assert "does not exist" in user_error(capsys, ["scaling", "fit", str(tmp_path / "nope.csv")])
    assert "usage: lmlab scaling" in user_error(capsys, ["scaling"])
    # A sweep directory that belongs to another corpus.
    other = tmp_path / "other.txt"
    other.write_text("y = 2\n" * 300)
    sweep = tmp_path / "s2"
    assert (
        main(
            [
                "scaling",
                "plan",
                "--corpus",
                str(corpus_file),
                *TINY,
                "--budgets",
                "2e7",
                "--out",
                str(sweep),
            ]
        )
        == 0
    )
    assert "holds a sweep on corpus" in user_error(
        capsys,
        ["scaling", "plan", "--corpus", str(other), *TINY, "--budgets", "2e7", "--out", str(sweep)],
    )
