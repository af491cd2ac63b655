"""Win rate of one run against a baseline, judged by the world's gold preference.

For each test-split prompt both runs answer (greedy by default, through the one engine); the
world judge (`lmlab.data.prefs.gold_score`: correctness first, then a final answer line and
brevity) scores both answers; a win counts 1, a tie 1/2. The report includes a 95% normal
interval, so a 65% target can be told apart from noise.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any


def win_rate(
    run: Path,
    baseline: Path,
    tasks: list[str],
    n: int = 200,
    seed: int = 0,
    temperature: float = 0.0,
    max_new_tokens: int = 96,
    step_by_step_fraction: float = 0.5,
) -> dict[str, Any]:
    """Gold-judged win rate of `run` over `baseline` on `n` test prompts of `tasks`."""
    from lmlab.data import world
    from lmlab.data.prefs import chat_prompt_ids, gold_score, world_prompts
    from lmlab.infer import Engine, SamplingParams

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    problems = world_prompts(tasks, n, seed, split="test")
    rng = random.Random(seed)
    questions = [world.prompt(p, rng.random() < step_by_step_fraction) for p in problems]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    scores = []
    for path in (run, baseline):
        engine = Engine.from_checkpoint(path)
        outs = engine.generate([chat_prompt_ids(engine.tokenizer, q) for q in questions], params)
        scores.append([gold_score(p, o[0].text) for p, o in zip(problems, outs, strict=True)])
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(*scores, strict=True)]
    rate = sum(wins) / len(wins)
    half = 1.96 * math.sqrt(max(rate * (1 - rate), 1e-12) / len(wins))
    return {
        "run": str(run),
        "baseline": str(baseline),
        "tasks": tasks,
        "n": len(wins),
        "win_rate": rate,
        "ci95": [max(0.0, rate - half), min(1.0, rate + half)],
        "ties": sum(w == 0.5 for w in wins) / len(wins),
        "gold_run": sum(scores[0]) / len(wins),
        "gold_baseline": sum(scores[1]) / len(wins),
    }
