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


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--strategy", "magic"], "unknown strategy"),
        (["--strategy", "sc", "-k", "0"], "k (samples) must be"),
        (["--strategy", "tot", "--breadth", "0"], "breadth must be"),
        (["--strategy", "tot", "--evaluator", "verifier"], "verifier"),
        (["--strategy", "tot", "--evaluator", "reward"], "--reward"),
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
