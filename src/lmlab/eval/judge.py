"""Win rate of one run against a baseline, judged by the world's gold preference.

For each test-split prompt both runs answer (greedy by default, through the one engine); a judge
(by default the world's, `world.gold_score`: correctness first, then a final answer line and
brevity) scores both answers; a win counts 1, a tie 1/2. The report includes a 95% normal
interval, so a 65% target can be told apart from noise: the win rate is the mean of per-prompt
scores in {0, 1/2, 1}, whose variance is estimated from the scores themselves (with ties it is
below rate * (1 - rate), the variance of a 0/1 outcome).

A strict judge calls any gold difference a win, however small: a wrong answer one character
shorter than another wrong answer wins. The report therefore also gives the win rate with
differences below the annotator's margin (`lmlab.data.prefs.DEFAULT_MARGIN`, 40 characters of
brevity) counted as ties, and how often each run was right (the verifier's verdict), so that a
win made of brevity alone can be told apart from a win made of right answers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lmlab.data import world
from lmlab.data.prefs import DEFAULT_MARGIN, world_prompts
from lmlab.infer import Engine, SamplingParams

Judge = Callable[[world.Problem, str], float]
"""A score of an answer to a world problem; the higher-scored answer wins."""


def tally(run: Sequence[float], baseline: Sequence[float], margin: float = 0.0) -> dict[str, Any]:
    """Win rate of gold scores `run` over `baseline` (paired); |difference| <= margin ties."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if len(run) != len(baseline) or not run:
        raise ValueError("need equally many (and at least one) scores for run and baseline")
    wins = [
        0.5 if abs(a - b) <= margin else 1.0 if a > b else 0.0
        for a, b in zip(run, baseline, strict=True)
    ]
    n = len(wins)
    rate = sum(wins) / n
    # 95% normal interval from the sample variance of the per-prompt scores; one prompt says
    # nothing about the spread, so its interval is all of [0, 1]
    var = sum((w - rate) ** 2 for w in wins) / (n - 1) if n > 1 else math.inf
    half = 1.96 * math.sqrt(var / n)
    return {
        "win_rate": rate,
        "ci95": [max(0.0, rate - half), min(1.0, rate + half)],
        "wins": sum(w == 1.0 for w in wins) / len(wins),
        "ties": sum(w == 0.5 for w in wins) / len(wins),
        "losses": sum(w == 0.0 for w in wins) / len(wins),
    }


def judge_answers(
    problems: Sequence[world.Problem],
    run_answers: Sequence[str],
    baseline_answers: Sequence[str],
    margin: float = DEFAULT_MARGIN,
    judge: Judge = world.gold_score,
) -> dict[str, Any]:
    """The judged report on two runs' answers to the same world problems: strict win rate, the
    same with differences up to `margin` as ties (`at_margin`), mean score and accuracy."""
    answer_sets = (run_answers, baseline_answers)
    scores = [[judge(p, a) for p, a in zip(problems, ans, strict=True)] for ans in answer_sets]
    n = len(problems)
    correct = [sum(map(world.reward, problems, ans)) / n for ans in answer_sets]  # the verdicts
    return {
        "n": n,
        **tally(*scores),
        "at_margin": {"margin": margin, **tally(*scores, margin=margin)},
        "gold_run": sum(scores[0]) / n,
        "gold_baseline": sum(scores[1]) / n,
        "correct_run": correct[0],
        "correct_baseline": correct[1],
    }


def win_rate(
    run: Path,
    baseline: Path,
    tasks: list[str],
    n: int = 200,
    seed: int = 0,
    temperature: float = 0.0,
    max_new_tokens: int = 96,
    step_by_step_fraction: float = 0.5,
    margin: float = DEFAULT_MARGIN,
    judge: Judge = world.gold_score,
) -> dict[str, Any]:
    """Judged win rate of `run` over `baseline` on `n` test prompts of `tasks`: strict, and
    with score differences up to `margin` counted as ties (`at_margin`)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    problems = world_prompts(tasks, n, seed, split="test")
    rng = random.Random(seed)
    cot = [rng.random() < step_by_step_fraction for _ in problems]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    answers = []
    for path in (run, baseline):
        engine = Engine.from_checkpoint(path)
        prompts = [
            world.prompt_ids(engine.tokenizer, p, c) for p, c in zip(problems, cot, strict=True)
        ]
        answers.append([o[0].text for o in engine.generate(prompts, params)])
    return {
        "run": str(run),
        "baseline": str(baseline),
        "tasks": tasks,
        **judge_answers(problems, *answers, margin=margin, judge=judge),
    }
