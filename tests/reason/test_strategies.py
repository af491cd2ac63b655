"""Strategies over a scripted engine and the real engine: answers, budgets and bad input."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from lmlab.data import world
from lmlab.infer import Engine, SamplingParams
from lmlab.reason import ReasonError, get_strategy, parse_strategy
from lmlab.reason.base import Ledger
from lmlab.reason.strategies import (
    Adaptive,
    FewShotCoT,
    SelfConsistency,
    TreeOfThoughts,
    sample_chains,
)
from tests.reason.fakes import CountingEngine, ScriptedEngine


def _noise(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _gold(prompt: str) -> str:
    """The arith answer of the last question in a prompt (the scripted model 'knows' it)."""
    q = prompt.split("What")[-1] if "What" in prompt else prompt
    nums = [int(t) for t in q.replace("?", " ").replace(".", " ").split() if t.isdigit()]
    return str(nums[-2] + nums[-1]) if len(nums) >= 2 else "0"


def noisy_reply(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
    """Right with probability ~0.6 per sample, long chains of thought, various confidences."""
    if "step by step" not in prompt:  # direct: short, usually wrong, unsure
        return str(_noise(prompt) % 100), math.log(0.5)
    r = _noise(prompt, i, params.seed, params.temperature)
    answer = _gold(prompt) if r % 10 < 6 else str(r % 97)
    return "step\n" * (3 + r % 5) + f"Answer: {answer}", math.log(0.6 + (r % 4) / 10)


def _problems(n: int = 6) -> list[world.Problem]:
    return world.generate("arith", n, seed=3, split="test", digits=2, op="add")


@pytest.mark.parametrize("tot", [None, True])
@pytest.mark.parametrize("budget", [1, 10, 40, 90, 200, 500, 2000])
def test_adaptive_never_spends_more_than_its_budget(budget: int, tot: bool | None) -> None:
    engine = ScriptedEngine(noisy_reply)
    strategy = Adaptive(budget=budget, k=6, step=2, max_new_tokens=30, tot=tot)
    results = strategy.run(engine, _problems())
    assert all(r.compute.tokens <= budget for r in results)
    assert sum(r.compute.tokens for r in results) == engine.generated


def test_adaptive_stops_early_when_votes_agree() -> None:
    def agreeing(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
        if "step by step" not in prompt:
            return "0", math.log(0.3)
        return f"step\nAnswer: {_gold(prompt)}", math.log(0.9)

    engine = ScriptedEngine(agreeing)
    problems = _problems(3)
    results = Adaptive(budget=10_000, k=8, step=2, tot=False).run(engine, problems)
    for p, r in zip(problems, results, strict=True):
        assert r.answer == p.answer
        assert r.info["stage"] == "sc"
        assert len(r.info["votes"]) == 3  # greedy + one round of 2, then 3 agreeing votes stop
    sc = SelfConsistency(k=8).run(ScriptedEngine(agreeing), problems)
    assert sum(r.compute.tokens for r in results) < sum(r.compute.tokens for r in sc)


def test_self_consistency_votes_and_reports_both_winners() -> None:
    problems = _problems(4)
    results = SelfConsistency(k=8, temperature=0.7).run(ScriptedEngine(noisy_reply), problems)
    for r in results:
        assert len(r.traces) == 8
        assert r.answer == r.info["majority"]
        assert "weighted" in r.info
        assert 0 < r.confidence <= 1


def test_fewshot_cot_puts_train_exemplars_in_the_prompt() -> None:
    seen: list[str] = []

    def reply(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
        seen.append(prompt)
        return "Answer: 1", 0.0

    problems = _problems(2)
    results = FewShotCoT(task="arith:2:op=add", shots=2).run(ScriptedEngine(reply), problems)
    assert [r.info["shots"] for r in results] == [2, 2]
    exemplars = world.generate("arith", 2, seed=1, split="train", digits=2, op="add")
    assert all(ex.trace in seen[0] for ex in exemplars)
    assert all(world.ANSWER_PREFIX in s for s in seen)


def test_zero_shot_cot_runs_two_stages() -> None:
    prompts: list[str] = []

    def reply(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
        prompts.append(prompt)
        if prompt.endswith(world.ANSWER_PREFIX):
            return f" {_gold(prompt)}\nextra", 0.0
        return f"I add them.\nAnswer: {_gold(prompt)}", 0.0

    problems = _problems(2)
    results = get_strategy("cot").run(ScriptedEngine(reply), problems)
    assert [r.answer for r in results] == [p.answer for p in problems]
    assert len(prompts) == 4  # reasoning, then extraction, per question
    assert all(len(r.traces) == 2 for r in results)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("magic", "unknown strategy"),
        ("sc@0", "k"),
        ("sc@x", "integer"),
        ("direct@3", "takes no @N"),
        ("tot@0", "breadth"),
        ("fewshot-cot@0", "shots"),
    ],
)
def test_bad_strategy_specs(spec: str, match: str) -> None:
    with pytest.raises(ReasonError, match=match) as e:
        parse_strategy(spec)
    assert "\n" not in str(e.value)


def test_bad_settings() -> None:
    with pytest.raises(ReasonError, match="k"):
        get_strategy("sc", k=-1)
    with pytest.raises(ReasonError, match="breadth"):
        get_strategy("tot", breadth=0)
    with pytest.raises(ReasonError, match="no setting"):
        get_strategy("direct", breadth=3)
    with pytest.raises(ReasonError, match="evaluator"):
        get_strategy("tot", evaluator="oracle")
    with pytest.raises(ReasonError, match="budget"):
        get_strategy("adaptive", budget=0)
    with pytest.raises(ValueError, match="unknown task"):
        get_strategy("direct", task="poetry")
    with pytest.raises(ReasonError, match="verifier"):
        TreeOfThoughts(evaluator="verifier").run(ScriptedEngine(noisy_reply), _problems(1))
    with pytest.raises(ReasonError, match="non-empty"):
        get_strategy("direct").run(ScriptedEngine(noisy_reply), [])


def test_parse_strategy_sets_the_count() -> None:
    assert parse_strategy("sc@8").k == 8
    assert parse_strategy("sc-weighted@4").weighted
    assert parse_strategy("tot@5").breadth == 5
    assert parse_strategy("fewshot-cot@2").shots == 2
    assert parse_strategy("adaptive@6", budget=100).k == 6


@pytest.mark.parametrize(
    "spec", ["direct", "cot", "fewshot-cot@1", "sc@3", "sc-weighted@2", "tot@2", "adaptive@2"]
)
def test_every_strategy_on_the_real_engine(tiny_run: Path, spec: str) -> None:
    engine = CountingEngine(Engine.from_checkpoint(tiny_run, max_batch=8))
    problems = world.generate("arith", 2, seed=0, split="test", digits=1, op="add")
    settings: dict[str, object] = {"max_new_tokens": 6, "task": "arith:1:op=add"}
    if spec.startswith("tot"):  # the likelihood ranker: tiny_run's context holds no value prompt
        settings.update(max_depth=2, budget=60, evaluator="likelihood")
    if spec.startswith("adaptive"):
        settings["budget"] = 60
    strategy = parse_strategy(spec, **settings)
    results = strategy.run(engine, problems)
    assert len(results) == 2
    assert sum(r.compute.tokens for r in results) == engine.generated > 0
    assert sum(r.compute.prompt_tokens for r in results) == engine.prefilled > 0
    assert all(r.compute.flops > 0 and r.compute.prompt_tokens > 0 for r in results)
    if "budget" in settings:
        assert all(r.compute.tokens <= 60 for r in results)


def test_tot_propose_on_the_real_engine(tiny_run: Path) -> None:
    engine = CountingEngine(Engine.from_checkpoint(tiny_run, max_batch=8))
    problems = world.generate("arith", 2, seed=0, split="test", digits=1, op="add")
    tot = TreeOfThoughts(
        generator="propose",
        evaluator="likelihood",
        k=2,
        breadth=2,
        max_depth=2,
        max_new_tokens=5,
    )
    results = tot.run(engine, problems)
    assert sum(r.compute.tokens for r in results) == engine.generated > 0
    assert sum(r.compute.prompt_tokens for r in results) == engine.prefilled
    assert engine.model.prefilled > 0  # the first-token forward passes are charged too
    assert all(r.info["expanded"] >= 1 for r in results)


def test_sample_chains_gives_each_call_its_own_seed() -> None:
    """Questions whose budgets afford different n are asked in separate engine calls; the engine
    numbers noise streams within one call only, so the calls must not share a seed."""
    engine = ScriptedEngine(lambda prompt, i, params: ("x\nAnswer: 1", -0.1))
    prompts = {0: [1, 2, 3], 1: [4, 5, 6]}
    budgets = Ledger(engine, 2, budget=30)
    budgets.spent[1].tokens = 30 - 2 * 8  # question 1 affords two 8-token chains, question 0 three
    out = sample_chains(budgets, prompts, 3, 0.7, 8, seed=5)
    assert [len(out[0]), len(out[1])] == [3, 2]
    seeds = [params.seed for _, params in engine.calls]
    assert len(seeds) == 2 and len(set(seeds)) == 2
