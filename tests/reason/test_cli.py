"""`lmlab reason`: one strategy, a comparison with its plot, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmlab.cli import main

BASE = ["--task", "arith", "--digits", "1", "--n", "3", "--max-new-tokens", "4"]


def test_reason_one_strategy_writes_answers(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["reason", str(tiny_run), *BASE, "--strategy", "sc@2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["answers"]) == 3
    assert report["rows"][0]["strategy"] == "sc@2"
    assert report["rows"][0]["tokens"] > 0


def test_reason_compare_plots_accuracy_vs_compute(tiny_run: Path, tmp_path: Path) -> None:
    png, out = tmp_path / "acc.png", tmp_path / "cmp.json"
    argv = [
        "reason",
        str(tiny_run),
        *BASE,
        "--compare",
        "direct,sc@2,tot@2",
        "-k",
        "2",
        "--budget",
        "40",
        "--plot",
        str(png),
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(out.read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["direct", "sc@2", "tot@2"]
    assert any(r["pareto"] for r in rows)


@pytest.mark.parametrize(("evaluator", "flag"), [("value", "--n-evaluate"), ("vote", "--n-vote")])
def test_reason_tot_evaluator_flags(
    tiny_run: Path, tmp_path: Path, evaluator: str, flag: str
) -> None:
    out = tmp_path / "tot.json"
    argv = ["reason", str(tiny_run), *BASE, "--strategy", "tot@2", "--evaluator", evaluator]
    assert main([*argv, flag, "2", "--out", str(out)]) == 0
    answers = json.loads(out.read_text())["answers"]
    assert all(a["eval_replies"] % 2 == 0 for a in answers)  # 2 replies per prompt asked


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--strategy", "magic"], "unknown strategy"),
        (["--strategy", "sc", "-k", "0"], "k must be in [1, 64]"),
        (["--strategy", "tot", "--breadth", "0"], "breadth must be"),
        (["--strategy", "tot", "--evaluator", "verifier"], "verifier"),
        (["--strategy", "tot", "--evaluator", "reward"], "--reward"),
        (["--strategy", "tot", "--evaluator", "value", "--n-evaluate", "0"], "n_evaluate must"),
        (["--strategy", "tot", "--evaluator", "vote", "--n-vote", "0"], "n_vote must"),
        (["--strategy", "tot", "--evaluator", "likelihood", "--n-vote", "3"], "--n-vote is only"),
        (["--strategy", "tot", "--evaluator", "vote", "--n-evaluate", "3"], "--n-evaluate is"),
        (["--strategy", "sc", "--n-evaluate", "2"], "no setting --n-evaluate"),
        (["--strategy", "direct", "--breadth", "3"], "no setting --breadth"),
        (["--strategy", "direct", "--plot", "x.png"], "--plot needs --compare"),
    ],
)
def test_reason_bad_input_is_one_line(
    tiny_run: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    assert main(["reason", str(tiny_run), *BASE, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err
    assert err.count("\n") == 1
