"""Tests for lmlab.eval.judge: hand-made answers whose verdicts are known, and the confidence
interval of a win rate whose ties count one half."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.data import world
from lmlab.eval.judge import judge_answers, tally


def test_tally_counts_wins_ties_and_margin() -> None:
    run, base = [1.2, 0.199, 0.3, 0.5], [0.2, 0.198, 0.3, 1.5]
    strict = tally(run, base)
    assert strict["win_rate"] == (1 + 1 + 0.5 + 0) / 4
    assert (strict["wins"], strict["ties"], strict["losses"]) == (0.5, 0.25, 0.25)
    loose = tally(run, base, margin=0.02)  # the one-character win becomes a tie
    assert loose["win_rate"] == (1 + 0.5 + 0.5 + 0) / 4 and loose["ties"] == 0.5
    with pytest.raises(ValueError, match="equally many"):
        tally([1.0], [])


def test_interval_of_all_ties_has_no_width() -> None:
    # every prompt scores exactly 1/2: the scores do not vary, so neither does their mean
    # (rate * (1 - rate) would claim a variance of 1/4 per prompt: +-0.44 on 5 prompts)
    report = tally([0.3] * 5, [0.3] * 5)
    assert report["win_rate"] == 0.5 and report["ci95"] == [0.5, 0.5]


def test_interval_from_the_sample_variance_of_the_scores() -> None:
    run = [2.0, 2.0, 1.0, 1.0, 0.0, 2.0, 1.0, 0.0]
    report = tally(run, [1.0] * 8)  # per-prompt scores 1, 1, 1/2, 1/2, 0, 1, 1/2, 0
    rate = 4.5 / 8
    # deviations from 0.5625: three wins +0.4375, three ties -0.0625, two losses -0.5625
    var = (3 * 0.4375**2 + 3 * 0.0625**2 + 2 * 0.5625**2) / 7  # sample variance, n - 1 = 7
    half = 1.96 * math.sqrt(var / 8)  # 0.2891
    assert report["win_rate"] == rate
    assert report["ci95"] == pytest.approx([rate - half, rate + half])
    assert half == pytest.approx(0.28915, abs=1e-5)
    assert tally([1.0], [0.0])["ci95"] == [0.0, 1.0]  # one prompt: no spread to estimate


def test_the_better_run_wins() -> None:
    problems = world.generate("arith", 6, seed=0, split="test", digits=1)
    right = [f"Answer: {p.answer}" for p in problems]
    wrong = [f"Answer: {int(p.answer) + 1}" for p in problems]
    report = judge_answers(problems, right, wrong)
    assert report["win_rate"] == 1.0 and report["wins"] == 1.0 and report["ci95"] == [1.0, 1.0]
    assert report["at_margin"]["win_rate"] == 1.0
    assert (report["correct_run"], report["correct_baseline"]) == (1.0, 0.0)
    assert judge_answers(problems, wrong, right)["win_rate"] == 0.0


def test_judge_answers_mixed_case_by_hand() -> None:
    p = world.generate("arith", 5, seed=0, split="test", digits=1)
    right = [f"Answer: {x.answer}" for x in p]
    wrong = [f"Answer: {int(x.answer) + 1}" for x in p]
    wordy = "Let me work this out carefully, one step at a time, as I was taught.\n"
    run = [right[0], right[1], right[2], wrong[3], wrong[4]]
    base = [
        wrong[0],  # right beats wrong: a win
        right[1],  # the same answer: a tie
        wordy + right[2],  # both right, the baseline 70 characters longer: a win at any margin
        right[3],  # wrong loses to right
        wrong[4] + "0",  # both wrong, one character apart: a win, and a tie at the margin
    ]
    report = judge_answers(p, run, base)
    assert report["win_rate"] == pytest.approx((1 + 0.5 + 1 + 0 + 1) / 5)
    assert (report["wins"], report["ties"], report["losses"]) == (0.6, 0.2, 0.2)
    assert report["at_margin"]["win_rate"] == pytest.approx((1 + 0.5 + 1 + 0 + 0.5) / 5)
    assert (report["correct_run"], report["correct_baseline"]) == (0.6, 0.6)
    assert report["n"] == 5


def test_cli_judge(chat_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["eval", str(chat_run), "--judge", "world", "--tasks", "arith:1", "--n", "3"]
    assert main([*argv, "--baseline", str(chat_run)]) == 0
    out = capsys.readouterr().out
    assert '"n": 3' in out and '"at_margin"' in out
    assert '"win_rate": 0.5' in out  # greedy answers of one run against itself all tie
    assert main(argv) == 2
    assert "--baseline" in capsys.readouterr().err
