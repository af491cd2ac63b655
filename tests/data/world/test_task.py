"""What a task gives: the prompt of a problem and its gold reply, the family's grade, reward and
gold preference score (on hand-made replies), and the step checkers (countdown's, and none)."""

from __future__ import annotations

import pytest

from lmlab.data import world
from lmlab.data.tokenizer import byte_tokenizer
from lmlab.data.world import STEP_BY_STEP, Problem
from lmlab.data.world.countdown import steps_valid

TOY = Problem(
    "countdown",
    "Make 24 from 2, 3, 4.",
    "(2 * 3) * 4",
    "2 * 3 = 6\n6 * 4 = 24\nAnswer: (2 * 3) * 4",
    "toy",
    {"numbers": [2, 3, 4], "target": 24},
)
SUM = Problem("arith", "What is 20 + 37?", "57", "20 + 37 = 57\nAnswer: 57", "20+37")


@pytest.mark.parametrize("name", list(world.FAMILIES))
@pytest.mark.parametrize("split", ["train", "test"])
@pytest.mark.parametrize("cot", [False, True])
def test_the_gold_reply_to_the_prompt_grades_right(name: str, split: str, cot: bool) -> None:
    fam = world.family(name)
    for p in world.generate(name, 20, seed=1, split=split):
        text = world.prompt(p, cot)
        if not cot:
            assert text == p.question
        else:  # the request on its own line after a multi-line question (an ICL episode)
            sep = "\n" if "\n" in p.question else " "
            assert text == p.question + sep + STEP_BY_STEP
        assert world.messages(p, cot) == [{"role": "user", "content": text}]
        reply = world.response(p, cot)
        assert reply == (p.trace if cot else p.answer)
        g = fam.grade(p, reply)
        assert g.correct and g.extracted == p.answer and g.pred == g.gold
        assert fam.reward(p, reply) == world.reward(p, reply) == 1.0


@pytest.mark.parametrize("name", list(world.FAMILIES))
def test_a_wrong_reply_grades_wrong(name: str) -> None:
    fam = world.family(name)
    for p in world.generate(name, 20, seed=2, split="test"):
        g = fam.grade(p, f"Let me see.\nAnswer: {p.answer} + 1")
        assert not g.correct and g.extracted == f"{p.answer} + 1" and g.pred != g.gold
        assert fam.reward(p, f"Answer: {p.answer} + 1") == world.reward(p, "?") == 0.0


def test_prompt_ids_are_the_one_turn_chat() -> None:
    tok = byte_tokenizer()
    for cot in (False, True):
        body = tok.encode(world.prompt(SUM, cot))
        assert world.prompt_ids(tok, SUM, cot) == [
            tok.bos_id,
            tok.user_id,
            *body,
            tok.end_id,
            tok.assistant_id,
        ]
    assert world.prompt(SUM, True) == f"What is 20 + 37? {STEP_BY_STEP}"


def test_grade_normalises_both_sides() -> None:
    g = world.family("arith").grade(SUM, "20 + 37 = 57\nAnswer: 0,057.")
    assert (g.extracted, g.pred, g.gold, g.correct) == ("0,057.", "57", "57", True)
    direct = world.family("arith").grade(SUM, "  57 \nmore text")  # first non-empty line
    assert (direct.extracted, direct.correct) == ("57", True)


def test_countdown_grades_any_expression_that_reaches_the_target() -> None:
    fam = world.family("countdown")
    g = fam.grade(TOY, "Answer: 4 * 3 * 2")
    assert g.correct and g.pred != g.gold  # right, though not the gold expression
    assert not fam.grade(TOY, "Answer: 4 * 3 * 2 * 1").correct  # 1 is not a given number
    assert not fam.grade(TOY, "Answer: 4 * 3 + 2").correct  # 14
    assert fam.reward(TOY, "Answer: (4 + 2) * 3 + 6 - 6") == 0.0


def test_only_countdown_verifies_without_the_gold_answer() -> None:
    assert {f.name for f in world.FAMILIES.values() if f.verifies_without_gold} == {"countdown"}


@pytest.mark.parametrize(
    ("reply", "gold"),
    [
        ("Answer: 57", 1 + 0.2 + 0.2 * (1 - 10 / 400)),  # right, answer line, 10 characters
        ("57", 1 + 0.2 * (1 - 2 / 400)),  # right, no answer line
        ("57\nthat is all", 1 + 0.2 * (1 - 14 / 400)),  # the last line is not the answer line
        ("20 + 37 = 57\nAnswer: 57", 1 + 0.2 + 0.2 * (1 - 23 / 400)),
        ("Answer: 58", 0.2 + 0.2 * (1 - 10 / 400)),  # wrong: style only
        ("", 0.2),  # nothing said: brevity only
        ("x" * 500, 0.0),  # wrong, no answer line, past the brevity limit
        ("Answer: 57\n" + "x" * 500, 1.0),  # right, but long and the answer line not last
    ],
)
def test_gold_score_on_hand_made_replies(reply: str, gold: float) -> None:
    assert world.family("arith").gold_score(SUM, reply) == pytest.approx(gold)
    assert world.gold_score(SUM, reply) == pytest.approx(gold)


def test_gold_prefers_correct_then_answer_line_then_brevity() -> None:
    p = world.generate("arith", 1, seed=3, digits=2, op="add")[0]
    gold = world.gold_score
    right_short = f"Answer: {p.answer}"
    right_long = p.trace
    wrong = "Answer: -1"
    assert gold(p, right_short) > gold(p, wrong)
    assert gold(p, right_long) > gold(p, wrong)
    assert gold(p, right_short) > gold(p, f"{p.answer}\nthat is all")
    assert gold(p, right_short) >= gold(p, right_long)


def test_countdown_gold_score_uses_its_verifier() -> None:
    reply = "Answer: 4 * 3 * 2"  # a right expression other than the gold one
    assert world.gold_score(TOY, reply) == pytest.approx(1.2 + 0.2 * (1 - len(reply) / 400))


def test_countdown_step_checks() -> None:
    assert world.family("countdown").step_check is steps_valid
    assert steps_valid(TOY, [])  # nothing written yet: open
    assert steps_valid(TOY, ["2 * 3 = 6"])  # open: 6 and 4 still in hand
    assert steps_valid(TOY, ["2 * 3 = 6", "6 * 4 = 24"])
    assert steps_valid(TOY, TOY.trace.splitlines())  # the answer line is not a step
    assert not steps_valid(TOY, ["2 * 3 = 7"])  # wrong arithmetic
    assert not steps_valid(TOY, ["2 * 2 = 4"])  # uses 2 twice
    assert not steps_valid(TOY, ["6 * 4 = 24"])  # 6 is not in hand yet
    assert not steps_valid(TOY, ["two times three"])
    assert not steps_valid(TOY, ["3 / 0 = 0"])


def test_countdown_dead_end_when_the_last_number_misses() -> None:
    assert not steps_valid(TOY, ["2 + 3 = 5", "5 * 4 = 20"])
    assert steps_valid(TOY, ["2 * 3 = 6", "6 * 4 = 24"])


@pytest.mark.parametrize("name", ["arith", "chain", "strings", "icl"])
def test_families_without_a_step_checker_say_so(name: str) -> None:
    assert world.family(name).step_check is None
