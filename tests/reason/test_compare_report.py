"""`reason/compare.py`'s report of `lmlab reason`: one strategy's row with every answer, or
the compared rows; and the engine slots the widest request needs."""

from __future__ import annotations

import pytest

from lmlab.data import world
from lmlab.infer import SamplingParams
from lmlab.reason.base import ReasonError
from lmlab.reason.compare import report, widest_request
from tests.reason.fakes import ScriptedEngine


def test_one_strategy_reports_every_answer() -> None:
    problems = world.generate("arith", 3, seed=0, split="test", digits=1, op="add")
    right = problems[0]

    def reply(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
        return (right.answer if right.question in prompt else "nonsense"), -0.1

    out = report(ScriptedEngine(reply), problems, ["direct"], {"task": "arith:1"}, False)
    assert [r["strategy"] for r in out["rows"]] == ["direct"]
    answers = out["answers"]
    assert [a["question"] for a in answers] == [p.question for p in problems]
    assert [a["gold"] for a in answers] == [p.answer for p in problems]
    assert [a["correct"] for a in answers] == [True, False, False]
    assert answers[0]["answer"] == right.answer and all(a["tokens"] > 0 for a in answers)
    assert out["rows"][0]["accuracy"] == pytest.approx(1 / 3)


def test_compared_rows_have_no_answers_and_one_strategy_is_one() -> None:
    problems = world.generate("arith", 2, seed=0, split="test", digits=1, op="add")
    engine = ScriptedEngine(lambda prompt, i, params: ("1", -0.1))
    out = report(engine, problems, ["direct", "cot"], {"task": "arith:1"})
    assert set(out) == {"rows"} and [r["strategy"] for r in out["rows"]] == ["direct", "cot"]
    with pytest.raises(ReasonError, match="one strategy"):
        report(engine, problems, ["direct", "cot"], {}, compare_all=False)


def test_widest_request_counts_samples_thoughts_and_evaluator_replies() -> None:
    assert widest_request(["direct", "cot"]) == 1
    assert widest_request(["direct", "sc@6"]) == 6
    assert widest_request(["tot"], {"k": 2, "n_vote": 9}) == 9  # the vote evaluator's replies
    assert widest_request(["sc@4", "tot"], {"k": 5}) == 5  # -k sets both
