"""Tests for lmlab.eval.judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.eval.judge import win_rate


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
