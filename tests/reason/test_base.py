"""Votes, answer extraction and compute accounting (every strategy's compute is exactly what
the engine prefilled and generated for it)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from lmlab.data import world
from lmlab.data.world import STEP_BY_STEP
from lmlab.infer.engine import SamplingParams
from lmlab.model.transformer import FlopModel
from lmlab.reason.base import ReasonError, extract, normalize, vote
from lmlab.reason.strategies import (
    Adaptive,
    Direct,
    FewShotCoT,
    SelfConsistency,
    TreeOfThoughts,
    ZeroShotCoT,
)
from tests.reason.fakes import ScriptedEngine


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


def counting_reply(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
    """Chains of thought, ToT lines that reach an answer on the third line, and evaluator
    replies (a label, a vote)."""
    if "sure, likely or impossible" in prompt:
        return ["likely", "sure", "no"][i % 3], math.log(0.5)
    if "The best choice is N" in prompt:
        return f"The best choice is {i % 2 + 1}", math.log(0.5)
    if prompt.split(STEP_BY_STEP)[-1].count("\n") >= 2:
        return f"Answer: {len(prompt) % 7 + i}", math.log(0.5)
    answer = next(_CHAIN_ANSWERS) % 11  # every chain a new answer: the votes never settle
    return f"reasoning {i}\nmore\nAnswer: {answer}", math.log(0.5)


_CHAIN_ANSWERS = itertools.count()


ARITH = world.generate("arith", 4, seed=1, split="test", digits=2)
COUNTDOWN = world.generate("countdown", 3, seed=1, split="test", numbers=2)


@pytest.mark.parametrize(
    ("strategy", "problems"),
    [
        (Direct(), ARITH),
        (ZeroShotCoT(), ARITH),
        (FewShotCoT(task="arith:2", shots=2), ARITH),
        (SelfConsistency(k=4, temperature=0.8), ARITH),
        (SelfConsistency(k=3, weighted=True), ARITH),
        (TreeOfThoughts(evaluator="likelihood", max_new_tokens=24), ARITH),
        (TreeOfThoughts(evaluator="value", max_new_tokens=24, n_evaluate=2), ARITH),
        (TreeOfThoughts(evaluator="vote", max_new_tokens=24, search="dfs"), ARITH),
        (TreeOfThoughts(evaluator="verifier", max_new_tokens=24), COUNTDOWN),
        (
            TreeOfThoughts(evaluator="reward", max_new_tokens=24, reward_fn=lambda p, t: len(t)),
            COUNTDOWN,
        ),
        (Adaptive(budget=3000, k=4, tot=True, evaluator="value"), ARITH),
        (Adaptive(budget=3000, k=4), COUNTDOWN),
    ],
    ids=[
        "direct",
        "cot",
        "fewshot-cot",
        "sc",
        "sc-weighted",
        "tot-likelihood",
        "tot-value",
        "tot-vote-dfs",
        "tot-verifier",
        "tot-reward",
        "adaptive-value",
        "adaptive-verifier",
    ],
)
def test_compute_is_what_the_engine_prefilled_and_generated(
    strategy: Any, problems: list[world.Problem]
) -> None:
    engine = ScriptedEngine(counting_reply)
    results = strategy.run(engine, problems)
    assert engine.prefilled > 0 and engine.generated > 0
    judged = {"value": "sure, likely or impossible", "vote": "The best choice is N"}
    if getattr(strategy, "evaluator", None) in judged:  # the evaluator's prompts were asked
        assert any(judged[strategy.evaluator] in p for p in engine.prompts)
    assert sum(r.compute.prompt_tokens for r in results) == engine.prefilled
    assert sum(r.compute.tokens for r in results) == engine.generated
    assert sum(r.compute.calls for r in results) == len(engine.requests)
    fm = FlopModel.of(engine)
    assert sum(r.compute.flops for r in results) == pytest.approx(
        sum(fm.request(p, g) for p, g in engine.requests)
    )


def test_prompt_tokens_cover_the_exemplars_and_the_second_stage() -> None:
    """Few-shot exemplars and zero-shot CoT's extraction prompt are prefilled and charged."""
    engine = ScriptedEngine(counting_reply)
    [one_shot] = FewShotCoT(task="arith:2", shots=1).run(engine, ARITH[:1])
    [three_shot] = FewShotCoT(task="arith:2", shots=3).run(
        ScriptedEngine(counting_reply), ARITH[:1]
    )
    assert three_shot.compute.prompt_tokens > one_shot.compute.prompt_tokens
    engine = ScriptedEngine(counting_reply)
    [cot] = ZeroShotCoT().run(engine, ARITH[:1])
    (first, [reasoning]), (second, _) = engine.requests
    assert second == first + reasoning  # the reasoning (stop included) and "Answer:" again
    assert cot.compute.prompt_tokens == first + second
