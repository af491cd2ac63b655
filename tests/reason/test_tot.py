"""Tree of thoughts on a toy countdown problem: scripted thoughts and evaluators, and a scripted
model whose most likely path is wrong while its value and vote judgements are right."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pytest

from lmlab.data import world
from lmlab.data.world import STEP_BY_STEP, Problem
from lmlab.infer.engine import SamplingParams
from lmlab.model.transformer import FlopModel
from lmlab.reason.base import Ledger, ReasonError, Result, is_correct
from lmlab.reason.strategies import TreeOfThoughts
from lmlab.reason.tot import (
    Node,
    ValueEvaluator,
    bfs,
    dfs,
    make_evaluator,
    parse_value,
    parse_vote,
    value_prompt,
    verifier_evaluator,
    vote_prompt,
)
from tests.reason.fakes import ScriptedEngine

# Reach 24 from 2, 3, 4: only (2 * 3) * 4 works among the scripted thoughts.
TOY = Problem(
    "countdown",
    "Make 24 from 2, 3, 4.",
    "(2 * 3) * 4",
    "",
    "toy",
    {"numbers": [2, 3, 4], "target": 24},
)
TREE: dict[str, list[str]] = {
    "": ["2 + 3 = 5", "2 * 3 = 6", "3 - 2 = 2"],
    "2 + 3 = 5": ["5 * 4 = 20", "5 + 4 = 9"],
    "2 * 3 = 6": ["6 + 4 = 10", "6 * 4 = 24"],
    "3 - 2 = 2": ["2 * 4 = 8"],
    "2 + 3 = 5\n5 * 4 = 20": ["Answer: (2 + 3) * 4"],
    "2 + 3 = 5\n5 + 4 = 9": ["Answer: 2 + 3 + 4"],
    "2 * 3 = 6\n6 + 4 = 10": ["Answer: 2 * 3 + 4"],
    "2 * 3 = 6\n6 * 4 = 24": ["Answer: (2 * 3) * 4"],
    "3 - 2 = 2\n2 * 4 = 8": ["Answer: (3 - 2) * 4"],
}
# A scripted value per partial solution (last line), favouring the known path.
VALUES = {
    "2 + 3 = 5": 0.6,
    "2 * 3 = 6": 0.7,
    "3 - 2 = 2": 0.1,
    "6 * 4 = 24": 0.9,
    "5 * 4 = 20": 0.5,
    "5 + 4 = 9": 0.2,
    "6 + 4 = 10": 0.3,
    "2 * 4 = 8": 0.1,
}


class ScriptedThoughts:
    """Children from TREE; each thought costs one token per character, charged to the ledger."""

    k = 3
    max_tokens = 20
    cost = k * max_tokens

    def __init__(self) -> None:
        self.expanded: list[str] = []

    def expand(
        self, ledger: Ledger, problems: Sequence[Problem], states: Sequence[tuple[int, Node]]
    ) -> list[list[Node]]:
        out = []
        for qi, node in states:
            self.expanded.append(node.text)
            lines = TREE.get(node.text, [])
            ledger.charge(qi, 10, [len(line) for line in lines])
            out.append([node.child(line, -1.0, len(line), False) for line in lines])
        return out


def scripted_value(
    ledger: Ledger, problems: Sequence[Problem], groups: Sequence[tuple[int, list[Node]]]
) -> list[list[float]]:
    return [
        [
            (1.0 if n.answer == "(2 * 3) * 4" else 0.0) if n.done else VALUES[n.lines[-1]]
            for n in nodes
        ]
        for _, nodes in groups
    ]


def _ledger(budget: int | None) -> Ledger:
    return Ledger(ScriptedEngine(lambda p, i, s: ("", 0.0)), 1, budget)


@pytest.mark.parametrize("evaluate", [scripted_value, verifier_evaluator], ids=["value", "verify"])
def test_bfs_finds_the_known_solution(evaluate) -> None:  # type: ignore[no-untyped-def]
    ledger = _ledger(None)
    gen = ScriptedThoughts()
    [out] = bfs(ledger, [TOY], gen, evaluate, breadth=2, max_depth=5, accept=1.0)
    assert out.best is not None and out.best.answer == "(2 * 3) * 4"
    assert out.best.lines == ("2 * 3 = 6", "6 * 4 = 24", "Answer: (2 * 3) * 4")
    assert "3 - 2 = 2" not in gen.expanded  # pruned: outside the breadth-2 frontier
    assert ledger.spent[0].tokens == sum(len(c) for t in gen.expanded for c in TREE.get(t, []))


@pytest.mark.parametrize("budget", [59, 60, 100, 150, 200])
def test_bfs_respects_its_budget(budget: int) -> None:
    ledger = _ledger(budget)
    gen = ScriptedThoughts()
    [out] = bfs(ledger, [TOY], gen, scripted_value, breadth=2, max_depth=5, accept=1.0)
    assert ledger.spent[0].tokens <= budget
    assert len(gen.expanded) == 0 if budget < gen.cost else len(gen.expanded) >= 1
    if budget < gen.cost:
        assert out.best is None


def test_dfs_prunes_and_stops_at_the_first_accepted_answer() -> None:
    ledger = _ledger(None)
    gen = ScriptedThoughts()
    [out] = dfs(ledger, [TOY], gen, verifier_evaluator, max_depth=5, threshold=0.5)
    assert out.best is not None and out.best.answer == "(2 * 3) * 4"
    # "3 - 2 = 2" is wrong arithmetic: the verifier values it 0 and DFS never expands it
    assert "3 - 2 = 2" not in gen.expanded


def test_verifier_evaluator_needs_a_task_with_a_verifier() -> None:
    arith = world.generate("arith", 2, digits=2)
    with pytest.raises(ReasonError, match="verifier"):
        make_evaluator("verifier", arith)
    with pytest.raises(ReasonError, match="reward function"):
        make_evaluator("reward", [TOY])
    with pytest.raises(ReasonError, match="unknown evaluator"):
        make_evaluator("oracle", [TOY])
    assert make_evaluator("verifier", [TOY]) is verifier_evaluator


def test_verifier_evaluator_uses_the_family_step_checker_or_none() -> None:
    arith = Problem("arith", "What is 2 + 3?", "5", "", "2+3")
    good, bad = Node().child("2 * 3 = 6", 0.0, 5, False), Node().child("2 * 3 = 7", 0.0, 5, False)
    right, wrong = Node().child("Answer: 5", 0.0, 3, True), Node().child("Answer: 6", 0.0, 3, True)
    values = verifier_evaluator(_ledger(None), [TOY, arith], [(0, [good, bad]), (1, [bad, right])])
    # countdown checks the steps; arith has no step checker: an open state is worth 0.5
    assert values == [[1.0, 0.0], [0.5, 1.0]]
    assert verifier_evaluator(_ledger(None), [arith], [(0, [wrong])]) == [[0.0]]


# --- the model-judged evaluators ----------------------------------------------------------------

# The most likely thoughts lead to a wrong answer, (2 + 3) * 4 = 20; the right path is less likely.
LIKELY_FIRST: dict[str, list[tuple[str, float]]] = {
    "": [("2 + 3 = 5", -0.1), ("2 * 3 = 6", -1.0)],
    "2 + 3 = 5": [("5 * 4 = 20", -0.1)],
    "2 * 3 = 6": [("6 * 4 = 24", -0.6)],
    "2 + 3 = 5\n5 * 4 = 20": [("Answer: (2 + 3) * 4", -0.1)],
    "2 * 3 = 6\n6 * 4 = 24": [("Answer: (2 * 3) * 4", -0.6)],
}
RIGHT = "2 * 3 = 6"
# Value replies by sample index: two of three parse (a label as the last word), one does not.
VALUE_REPLIES = {
    True: ["6 and 4 make 24.\nsure", "Likely.", "no idea"],
    False: ["impossible", "likely", "hmm"],
}
# Vote replies by sample index: two for the right state, one for another, two that name nothing.
VOTE_REPLIES = [
    "The best choice is {right}",
    "The best choice is {other}",
    "The best choice is 9",
    "I pick the first",
    "so the best choice is choice {right}.",
]


def judging_reply(prompt: str, i: int, params: SamplingParams) -> tuple[str, float]:
    """A scripted model that writes LIKELY_FIRST's thoughts and judges states like an oracle:
    "sure" of the right path and "impossible" of the other in value prompts, and votes for
    the right path in vote prompts."""
    if STEP_BY_STEP in prompt:  # a thought: the next line of the state after the question
        state = prompt.split(STEP_BY_STEP, 1)[1].strip("\n")
        line, lp = LIKELY_FIRST[state][i % len(LIKELY_FIRST[state])]
        return line + "\n", lp
    if "sure, likely or impossible" in prompt:
        return VALUE_REPLIES[RIGHT in prompt][i], -2.0
    choices = re.findall(r"Choice (\d+):\n(.*?)\n\n", prompt, re.DOTALL)
    right = next((n for n, text in choices if RIGHT in text), "0")
    other = next((n for n, text in choices if RIGHT not in text), str(len(choices) + 1))
    return VOTE_REPLIES[i].format(right=right, other=other), -2.0


def _tot(evaluator: str, **kw: object) -> TreeOfThoughts:
    return TreeOfThoughts(evaluator=evaluator, breadth=1, k=2, max_depth=4, max_new_tokens=24, **kw)  # type: ignore[arg-type]


def _check_compute(engine: ScriptedEngine, results: Sequence[Result]) -> None:
    """The results' compute is exactly what the engine did: tokens generated, prompt tokens
    prefilled, and the FLOPs of both."""
    assert sum(r.compute.tokens for r in results) == engine.generated
    assert sum(r.compute.prompt_tokens for r in results) == engine.prefilled
    fm = FlopModel.of(engine)
    flops = sum(fm.request(p, g) for p, g in engine.requests)
    assert sum(r.compute.flops for r in results) == pytest.approx(flops)


def test_likelihood_follows_the_most_likely_path_to_a_wrong_answer() -> None:
    engine = ScriptedEngine(judging_reply)
    [r] = _tot("likelihood").run(engine, [TOY])
    assert r.answer is not None and not is_correct(TOY, r.answer)
    assert r.traces == ["2 + 3 = 5\n5 * 4 = 20\nAnswer: (2 + 3) * 4"]
    assert "eval_replies" not in r.info  # the likelihood asks the model nothing
    _check_compute(engine, [r])


def test_value_prompt_picks_the_right_path() -> None:
    engine = ScriptedEngine(judging_reply)
    [r] = _tot("value", n_evaluate=3).run(engine, [TOY])
    assert is_correct(TOY, r.answer)
    assert r.traces == ["2 * 3 = 6\n6 * 4 = 24\nAnswer: (2 * 3) * 4"]
    assert r.confidence == pytest.approx(20 + 1)  # sure + likely; the third reply is nothing
    assert r.info["eval_replies"] == 3 * r.info["thoughts"]  # every child judged 3 times
    assert r.info["eval_parsed"] == 2 * r.info["thoughts"]
    _check_compute(engine, [r])


def test_vote_prompt_picks_the_right_path() -> None:
    engine = ScriptedEngine(judging_reply)
    [r] = _tot("vote", n_vote=5).run(engine, [TOY])
    assert is_correct(TOY, r.answer)
    assert r.traces == ["2 * 3 = 6\n6 * 4 = 24\nAnswer: (2 * 3) * 4"]
    assert r.confidence == 2.0  # the final step has one candidate: 2 of 5 replies name it
    assert r.info["eval_replies"] == 5 * r.info["expanded"]  # one vote prompt per step
    _check_compute(engine, [r])


def test_value_evaluator_sums_the_labels_of_its_samples() -> None:
    replies = ["Let me see.\nsure", "Sure!", "likely", "IMPOSSIBLE.", "maybe", ""]
    engine = ScriptedEngine(lambda prompt, i, params: (replies[i], -1.0))
    ledger = Ledger(engine, 1)
    evaluate = make_evaluator("value", [TOY], n_evaluate=6, max_tokens=20)
    assert isinstance(evaluate, ValueEvaluator)
    open_ = Node().child("2 * 3 = 6", -1.0, 9, False)
    no_answer = Node().child("2 * 3 = 6", -1.0, 9, True)  # ended without an Answer: line
    [[v_open, v_none]] = evaluate(ledger, [TOY], [(0, [open_, no_answer])])
    assert v_open == pytest.approx(20 + 20 + 1 + 0.001)  # "maybe" and "" count as nothing
    assert v_none == 0.0
    [(prompt_len, generated)] = engine.requests  # only the open state was asked, 6 times
    assert len(generated) == 6
    assert (evaluate.replies[0], evaluate.parsed[0]) == (6, 4)
    assert ledger.spent[0].prompt_tokens == prompt_len == engine.prefilled
    assert ledger.spent[0].tokens == engine.generated


def test_value_and_vote_prompts_are_built_from_the_problem() -> None:
    a = Node().child("2 * 3 = 6", -1.0, 9, False)
    b = Node().child("2 + 3 = 5", -1.0, 9, False)
    done = a.child("Answer: (2 * 3) * 4", -1.0, 5, False)
    text = value_prompt(TOY, a)
    assert TOY.question in text and "2 * 3 = 6" in text and text.endswith("impossible.")
    assert "Answer: (2 * 3) * 4" in value_prompt(TOY, done)
    votes = vote_prompt(TOY, [a, b])
    assert TOY.question in votes
    assert votes.index("Choice 1:\n2 * 3 = 6") < votes.index("Choice 2:\n2 + 3 = 5")


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("sure", "sure"),
        ("The numbers 6 and 4 work.\n\nSure.\n", "sure"),
        ("verdict: likely", "likely"),
        ("Impossible!", "impossible"),
        ("sure, likely or impossible?\nmaybe", None),
        ("sure it is not", None),  # the label must be the last word
        ("", None),
    ],
)
def test_parse_value(reply: str, label: str | None) -> None:
    assert parse_value(reply) == label


@pytest.mark.parametrize(
    ("reply", "choice"),
    [
        ("The best choice is 2", 1),
        ("choice 1 is bad.\nThe best choice is Choice 3.", 2),
        ("The best choice is 1, no wait, the best choice is 2", 1),  # the last one counts
        ("The best choice is 4", None),  # only 3 choices
        ("The best choice is 0", None),
        ("I like the second", None),
    ],
)
def test_parse_vote(reply: str, choice: int | None) -> None:
    assert parse_vote(reply, 3) == choice


def test_states_whose_value_prompt_overflows_the_context_are_not_asked() -> None:
    # room for the thought prompts (about 60 tokens) but not for a value prompt plus its reply
    engine = ScriptedEngine(judging_reply, max_len=110)
    [r] = _tot("value").run(engine, [TOY])
    assert r.info["eval_replies"] == 0
    assert r.traces == ["2 + 3 = 5\n5 * 4 = 20\nAnswer: (2 + 3) * 4"]  # ties: likelihood decides
    _check_compute(engine, [r])


@pytest.mark.parametrize("evaluator", ["value", "vote"])
@pytest.mark.parametrize("search", ["bfs", "dfs"])
@pytest.mark.parametrize("budget", [40, 150, 300, 600, 2000])
def test_tot_with_prompt_evaluators_never_exceeds_its_budget(
    evaluator: str, search: str, budget: int
) -> None:
    engine = ScriptedEngine(judging_reply)
    tot = _tot(evaluator, search=search, budget=budget, eval_tokens=16)
    [r] = tot.run(engine, [TOY])
    assert r.compute.tokens <= budget
    expansion = tot.expansion_cost(engine, [TOY])
    assert (r.info["expanded"] == 0) == (budget < expansion)
    _check_compute(engine, [r])
