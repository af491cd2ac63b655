"""Tests for lmlab.data.prefs: the gold annotator and pair labelling."""

from __future__ import annotations

import random

from lmlab.data import world
from lmlab.data.prefs import gold_score, label_pairs


def test_gold_prefers_correct_then_answer_line_then_brevity() -> None:
    p = world.generate("arith", 1, seed=3, digits=2, op="add")[0]
    right_short = f"Answer: {p.answer}"
    right_long = p.trace
    wrong = "Answer: -1"
    assert gold_score(p, right_short) > gold_score(p, wrong)
    assert gold_score(p, right_long) > gold_score(p, wrong)
    assert gold_score(p, right_short) > gold_score(p, f"{p.answer}\nthat is all")
    assert gold_score(p, right_short) >= gold_score(p, right_long)


def test_label_pairs_chooses_higher_gold_and_noise_flips() -> None:
    p = world.generate("arith", 1, seed=3, digits=2, op="add")[0]
    responses = [f"Answer: {p.answer}", "Answer: -1", "no idea"]
    pairs = label_pairs(p, "q", responses, random.Random(0), noise=0.0)
    assert pairs and all(x.chosen == responses[0] for x in pairs)
    flipped = label_pairs(p, "q", responses, random.Random(0), noise=0.4999)
    noisy = [label_pairs(p, "q", responses, random.Random(s), noise=0.3) for s in range(200)]
    rate = sum(x.meta["flipped"] for ps in noisy for x in ps) / sum(len(ps) for ps in noisy)
    assert 0.2 < rate < 0.4
    assert all(x.meta["source"] == "world" for x in flipped)


def test_label_pairs_margin_drops_near_ties() -> None:
    p = world.generate("arith", 1, seed=3, digits=2, op="add")[0]
    # two wrong answers 8 characters apart differ by 0.004 in gold: a tie at margin 0.02
    near = ["Answer: -1", "Answer: -1 or -2"]
    assert len(label_pairs(p, "q", near, random.Random(0))) == 1
    assert label_pairs(p, "q", near, random.Random(0), margin=0.02) == []
    far = [f"Answer: {p.answer}", *near]  # the right answer wins by more than 1
    pairs = label_pairs(p, "q", far, random.Random(0), margin=0.02)
    assert len(pairs) == 2 and all(x.chosen == far[0] for x in pairs)
    assert all(x.meta["gold_chosen"] - x.meta["gold_rejected"] >= 0.02 for x in pairs)
