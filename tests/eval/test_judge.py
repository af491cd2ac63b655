"""Tests for lmlab.eval.judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.eval.judge import tally, win_rate


def test_a_run_ties_with_itself(chat_run: Path) -> None:
    report = win_rate(chat_run, chat_run, ["arith:1"], n=6, max_new_tokens=8)
    assert report["win_rate"] == 0.5 and report["ties"] == 1.0  # greedy: identical answers
    assert report["ci95"][0] <= 0.5 <= report["ci95"][1]


def test_cli_judge(chat_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", str(chat_run), "--judge", "world", "--tasks", "arith:1", "--n", "3"]
    assert main([*argv, "--baseline", str(chat_run)]) == 0
    assert '"win_rate": 0.5' in capsys.readouterr().out
    assert main(argv) == 2
    assert "--baseline" in capsys.readouterr().err


def test_tally_counts_wins_ties_and_margin() -> None:
    run, base = [1.2, 0.199, 0.3, 0.5], [0.2, 0.198, 0.3, 1.5]
    strict = tally(run, base)
    assert strict["win_rate"] == (1 + 1 + 0.5 + 0) / 4
    assert (strict["wins"], strict["ties"], strict["losses"]) == (0.5, 0.25, 0.25)
    loose = tally(run, base, margin=0.02)  # the one-character win becomes a tie
    assert loose["win_rate"] == (1 + 0.5 + 0.5 + 0) / 4 and loose["ties"] == 0.5
    with pytest.raises(ValueError, match="equally many"):
        tally([1.0], [])


def test_report_has_margin_and_correctness(chat_run: Path) -> None:
    report = win_rate(chat_run, chat_run, ["arith:1"], n=4, max_new_tokens=8)
    assert report["at_margin"]["win_rate"] == 0.5
    assert report["correct_run"] == report["correct_baseline"]
