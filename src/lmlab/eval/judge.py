"""Win rate of one run against a baseline, judged by the world's gold preference.

For each test-split prompt both runs answer (greedy by default, through the one engine); the
world judge (`lmlab.data.prefs.gold_score`: correctness first, then a final answer line and
brevity) scores both answers; a win counts 1, a tie 1/2. The report includes a 95% normal
interval, so a 65% target can be told apart from noise: the win rate is the mean of per-prompt
scores in {0, 1/2, 1}, whose variance is estimated from the scores themselves (with ties it is
below rate * (1 - rate), the variance of a 0/1 outcome).

A strict judge calls any gold difference a win, however small: a wrong answer one character
shorter than another wrong answer wins. The report therefore also gives the win rate with
differences below the annotator's margin (`lmlab.data.prefs.DEFAULT_MARGIN`, 40 characters of
brevity) counted as ties, and how often each run was right, so that a win made of brevity alone
can be told apart from a win made of right answers.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmlab.data.prefs import DEFAULT_MARGIN, gold_score


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
    problems: Sequence[Any],
    run_answers: Sequence[str],
    baseline_answers: Sequence[str],
    margin: float = DEFAULT_MARGIN,
) -> dict[str, Any]:
    """The gold-judged report on two runs' answers to the same world problems: strict win rate,
    the same with differences up to `margin` as ties (`at_margin`), mean gold and accuracy."""
    scores = [
        [gold_score(p, a) for p, a in zip(problems, answers, strict=True)]
        for answers in (run_answers, baseline_answers)
    ]
    n = len(problems)
    # gold = correct + at most 0.4 of style, so an answer is right exactly when gold >= 1
    correct = [sum(g >= 1.0 for g in run_scores) / n for run_scores in scores]
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
) -> dict[str, Any]:
    """Gold-judged win rate of `run` over `baseline` on `n` test prompts of `tasks`: strict,
    and with gold differences up to `margin` counted as ties (`at_margin`)."""
    from lmlab.data import world
    from lmlab.data.prefs import chat_prompt_ids, world_prompts
    from lmlab.infer import Engine, SamplingParams

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    problems = world_prompts(tasks, n, seed, split="test")
    rng = random.Random(seed)
    questions = [world.prompt(p, rng.random() < step_by_step_fraction) for p in problems]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    answers = []
    for path in (run, baseline):
        engine = Engine.from_checkpoint(path)
        outs = engine.generate([chat_prompt_ids(engine.tokenizer, q) for q in questions], params)
        answers.append([o[0].text for o in outs])
    return {
        "run": str(run),
        "baseline": str(baseline),
        "tasks": tasks,
        **judge_answers(problems, *answers, margin=margin),
    }
