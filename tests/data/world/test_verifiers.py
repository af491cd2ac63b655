"""Every verifier accepts the reference solution and rejects corrupted ones (property-based)."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.data import world
from lmlab.data.world import arith, countdown

SEEDS = st.integers(0, 2**32 - 1)
SPLITS = st.sampled_from(["train", "test"])


def _problem(task: str, seed: int, split: str, **knobs: object) -> world.Problem:
    return world.generate(task, 1, seed=seed, split=split, **knobs)[0]


def _corrupt(s: str, pos: int, repl: str) -> str:
    """`s` with the character at `pos` replaced by a different one (`repl` or a fallback)."""
    i = pos % len(s)
    new = repl if repl != s[i] else ("x" if s[i] != "x" else "y")
    return s[:i] + new + s[i + 1 :]


@settings(max_examples=60, deadline=None)
@given(
    seed=SEEDS,
    split=SPLITS,
    digits=st.integers(1, 6),
    op=st.sampled_from(list(arith.OPS)),
    delta=st.integers(-1000, 1000).filter(bool),
)
def test_arith_verifier(seed: int, split: str, digits: int, op: str, delta: int) -> None:
    p = _problem("arith", seed, split, digits=digits, op=op)
    fam = world.family("arith")
    a, b = p.data["a"], p.data["b"]
    assert int(p.answer) == {"add": a + b, "sub": a - b, "mul": a * b}[op]
    assert fam.check(p, p.answer) and fam.check(p, world.extract_answer(p.trace))
    assert not fam.check(p, str(int(p.answer) + delta))
    assert not fam.check(p, p.answer + "7")
    assert not fam.check(p, "")


@settings(max_examples=60, deadline=None)
@given(seed=SEEDS, split=SPLITS, steps=st.integers(1, 4), delta=st.integers(-50, 50).filter(bool))
def test_chain_verifier(seed: int, split: str, steps: int, delta: int) -> None:
    p = _problem("chain", seed, split, steps=steps)
    fam = world.family("chain")
    # the trace's equations are right and chain into the answer
    q = None
    for line in p.trace.splitlines()[1:-1]:
        lhs, rhs = line.split(": ", 1)[1].split(" = ")
        assert Fraction(eval(lhs)) == int(rhs)  # the equations are plain integer arithmetic
        q = int(rhs)
    assert str(q) == p.answer
    assert fam.check(p, world.extract_answer(p.trace))
    assert not fam.check(p, str(int(p.answer) + delta))


@settings(max_examples=40, deadline=None)
@given(
    seed=SEEDS,
    split=SPLITS,
    numbers=st.integers(2, 4),
    pos=st.integers(0, 100),
    bump=st.integers(1, 5),
)
def test_countdown_verifier(seed: int, split: str, numbers: int, pos: int, bump: int) -> None:
    p = _problem("countdown", seed, split, numbers=numbers)
    fam = world.family("countdown")
    assert fam.check(p, p.answer) and fam.check(p, world.extract_answer(p.trace))
    found = countdown.solve(p.data["numbers"], p.data["target"])
    assert found is not None and fam.check(p, found)
    # corrupt one number of the reference expression: the multiset of numbers no longer matches
    starts = [
        i
        for i, t in enumerate(p.answer)
        if t.isdigit() and (i == 0 or not p.answer[i - 1].isdigit())
    ]
    i = starts[pos % len(starts)]
    j = i
    while j < len(p.answer) and p.answer[j].isdigit():
        j += 1
    wrong = p.answer[:i] + str(int(p.answer[i:j]) + 100 * bump) + p.answer[j:]
    assert not fam.check(p, wrong)
    assert not fam.check(p, f"{p.answer} + 0")  # an extra number
    assert not fam.check(p, str(p.data["target"]))  # the target alone uses no given number
    assert not fam.check(p, "__import__('os')")
    assert not fam.check(p, "1 / 0")


def test_countdown_solve_and_unsolvable() -> None:
    assert countdown.solve([4, 7, 8, 8], 24) is not None
    assert countdown.solve([1, 1, 1, 1], 24) is None
    assert countdown.evaluate("(8 - 2) * (7 - 3)") == (24, [8, 2, 7, 3])


@settings(max_examples=60, deadline=None)
@given(
    seed=SEEDS,
    split=SPLITS,
    length=st.integers(2, 12),
    op=st.sampled_from(["any", *world.FAMILIES["strings"].knobs["op"].choices[1:]]),
    pos=st.integers(0, 100),
    ch=st.sampled_from("abcXYZ9"),
)
def test_strings_verifier(seed: int, split: str, length: int, op: str, pos: int, ch: str) -> None:
    p = _problem("strings", seed, split, length=length, op=op)
    fam = world.family("strings")
    assert fam.check(p, p.answer) and fam.check(p, world.extract_answer(p.trace))
    assert fam.check(p, f'"{p.answer}"')  # quoting is not an error
    assert not fam.check(p, _corrupt(p.answer, pos, ch))
    assert not fam.check(p, p.answer + ch)
    assert not fam.check(p, p.answer[:-1])


@settings(max_examples=60, deadline=None)
@given(
    seed=SEEDS,
    split=SPLITS,
    k=st.integers(0, 8),
    rule=st.sampled_from(["cipher", "affine", "list"]),
    pos=st.integers(0, 100),
    ch=st.sampled_from("q7 "),
)
def test_icl_verifier(seed: int, split: str, k: int, rule: str, pos: int, ch: str) -> None:
    p = _problem("icl", seed, split, k=k, rule=rule)
    fam = world.family("icl")
    assert fam.check(p, p.answer) and fam.check(p, world.extract_answer(p.trace))
    corrupted = _corrupt(p.answer, pos, ch)
    if corrupted.strip() != p.answer.strip():
        assert not fam.check(p, corrupted)
    assert not fam.check(p, p.answer + "0")


@pytest.mark.parametrize("rule", ["cipher", "affine", "list"])
def test_icl_examples_follow_the_rule_of_the_answer(rule: str) -> None:
    """Every example pair is consistent with the rule the trace states (same rule as answer)."""
    for p in world.generate("icl", 20, seed=2, k=6, rule=rule):
        lines = p.question.splitlines()[1:-1]
        assert len(lines) >= 3 if rule == "affine" else len(lines) == 6
        query = p.question.splitlines()[-1].removesuffix(" -> ?")
        assert query not in [ln.split(" -> ")[0] for ln in lines]


def test_extract_answer() -> None:
    assert world.extract_answer("7 + 5 = 12\nAnswer: 12\n") == "12"
    assert world.extract_answer("Answer: 3\nAnswer: 4") == "4"
    assert world.extract_answer("\n  olleh \nmore") == "olleh"
    assert world.extract_answer("") == ""
    assert world.family("arith").normalize("1,234.") == "1234"


def test_countdown_verifier_reads_only_arithmetic() -> None:
    """The expression is parsed by Python's parser, which would also accept a trailing comment
    and digit-group underscores: neither is arithmetic, and neither verifies."""
    p = _problem("countdown", 3, "test", numbers=3)
    good = countdown.solve(p.data["numbers"], p.data["target"])
    assert good is not None and countdown.verify(p, good)
    assert not countdown.verify(p, f"{good}#junk")
    a = max(p.data["numbers"])
    if a >= 10:
        split = f"{str(a)[0]}_{str(a)[1:]}"
        assert not countdown.verify(p, good.replace(str(a), split, 1))
    assert countdown.evaluate("1_0 + 2") is None and countdown.evaluate("(3 + 4) * 2")
