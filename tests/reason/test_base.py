"""Votes, answer extraction and compute accounting."""

from __future__ import annotations

import math

import pytest

from lmlab.data import world
from lmlab.reason.base import FlopModel, ReasonError, extract, normalize, vote
from lmlab.reason.strategies import Direct, SelfConsistency, ZeroShotCoT


def test_majority_vote_on_fixed_samples() -> None:
    v = vote(["12", "15", "12", None, "12", "15"])
    assert v.answer == "12"
    assert v.share == pytest.approx(3 / 6)  # an abstention still counts in the total
    assert v.tally == {"12": 3.0, "15": 2.0}


def test_vote_tie_goes_to_the_first_answer_and_abstentions_alone_give_none() -> None:
    assert vote(["7", "9", "9", "7"]).answer == "7"
    assert vote([None, None]).answer is None
    assert vote([]).share == 0.0


def test_weighted_vote_can_overturn_the_majority() -> None:
    answers = ["12", "12", "15"]
    assert vote(answers).answer == "12"
    weighted = vote(answers, [0.1, 0.2, 0.9])
    assert weighted.answer == "15"
    assert weighted.share == pytest.approx(0.9 / 1.2)


def test_bad_weights_are_rejected() -> None:
    with pytest.raises(ReasonError):
        vote(["1", "2"], [1.0])
    with pytest.raises(ReasonError):
        vote(["1"], [-1.0])


@pytest.mark.parametrize(
    ("text", "strict", "expected"),
    [
        ("5 + 7 = 12\nAnswer: 12", True, "12"),
        ("Answer: 3\nwait, recheck\nAnswer: 4", True, "4"),  # the last answer line wins
        ("Add the digits.\n4 + 5 = 9, write 9", True, None),  # cut off: abstains
        ("Add the digits.\n4 + 5 = 9, write 9", False, "Add the digits."),
        ("\n\n  42  \nmore", False, "42"),
        ("Answer:   \n", True, None),  # an empty answer is no answer
        ("", False, None),
        ("so far 1234\nAnswer: 1,234.", True, "1,234."),
    ],
)
def test_extract_on_tricky_traces(text: str, strict: bool, expected: str | None) -> None:
    assert extract(text, strict) == expected


def test_normalize_uses_the_family() -> None:
    p = world.generate("arith", 1, digits=2)[0]
    assert normalize(p, "1,234.") == "1234"
    assert normalize(p, "-07") == "-7"
    assert normalize(p, None) is None
    assert normalize(world.Problem("", "q", "", "", "q"), "  hi ") == "hi"


def test_flops_count_every_token_run_forward() -> None:
    fm = FlopModel(n_matmul=100.0, attn_per_key=10.0)
    # prompt of 3 then 2 generated tokens: 4 forward tokens attending 1, 2, 3, 4 keys
    assert fm.request(3, [2]) == pytest.approx(2 * 100 * 4 + 10 * (1 + 2 + 3 + 4))
    # two samples sharing a prefill: the prompt is paid once
    assert fm.request(3, [2, 2]) == pytest.approx(2 * 100 * 5 + 10 * (1 + 2 + 3 + 4 + 4))
    assert fm.request(3, [1]) == fm.request(3, [])


def _tokens(engine_factory, strategy) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    engine = engine_factory()
    problems = world.generate("arith", 5, seed=1, split="test", digits=2)
    results = strategy.run(engine, problems)
    return sum(r.compute.tokens for r in results), engine.generated


@pytest.mark.parametrize(
    "strategy",
    [Direct(), ZeroShotCoT(), SelfConsistency(k=4, temperature=0.8)],
    ids=["direct", "cot", "sc"],
)
def test_compute_equals_tokens_generated_scripted(strategy) -> None:  # type: ignore[no-untyped-def]
    from tests.reason.fakes import ScriptedEngine

    def reply(prompt: str, i: int, params):  # type: ignore[no-untyped-def]
        return (f"reasoning {i}\nmore\nAnswer: {len(prompt) % 7 + i}", math.log(0.5))

    spent, generated = _tokens(lambda: ScriptedEngine(reply), strategy)
    assert spent == generated > 0
