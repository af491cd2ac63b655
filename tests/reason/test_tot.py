"""Tree of thoughts on a toy countdown problem with a scripted generator and evaluator."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from lmlab.data.world import Problem
from lmlab.reason.base import Ledger, ReasonError
from lmlab.reason.tot import (
    Node,
    bfs,
    countdown_steps_valid,
    dfs,
    make_evaluator,
    verifier_evaluator,
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


def scripted_value(ledger: Ledger, problem: Problem, qi: int, nodes: list[Node]) -> list[float]:
    return [
        (1.0 if n.answer == "(2 * 3) * 4" else 0.0) if n.done else VALUES[n.lines[-1]]
        for n in nodes
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


def test_countdown_step_checks() -> None:
    assert countdown_steps_valid(TOY, ["2 * 3 = 6", "6 * 4 = 24"])
    assert not countdown_steps_valid(TOY, ["2 * 3 = 7"])  # wrong arithmetic
    assert not countdown_steps_valid(TOY, ["2 * 2 = 4"])  # uses 2 twice
    assert not countdown_steps_valid(TOY, ["two times three"])


def test_verifier_evaluator_needs_a_task_with_a_verifier() -> None:
    from lmlab.data import world

    arith = world.generate("arith", 2, digits=2)
    with pytest.raises(ReasonError, match="verifier"):
        make_evaluator("verifier", arith)
    with pytest.raises(ReasonError, match="reward function"):
        make_evaluator("reward", [TOY])
    with pytest.raises(ReasonError, match="unknown evaluator"):
        make_evaluator("oracle", [TOY])
    assert make_evaluator("verifier", [TOY]) is verifier_evaluator


def test_countdown_dead_end_when_the_last_number_misses() -> None:
    assert not countdown_steps_valid(TOY, ["2 + 3 = 5", "5 * 4 = 20"])
    assert countdown_steps_valid(TOY, ["2 * 3 = 6", "6 * 4 = 24"])
