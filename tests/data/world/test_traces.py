"""Worked-solution layouts of `arith` and `strings`: every line is a copy of the line above minus
one digit or letter, the digit or letter used is the one at the cut, and the arithmetic holds."""

from __future__ import annotations

import itertools
import re

from hypothesis import given
from hypothesis import strategies as st

from lmlab.data.world import arith, strings

ADD = re.compile(
    r"(\d+) \+ (\d+), carry (\d): (\d) \+ (\d) \+ (\d) = (\d+), so far (\d+), carry (\d)"
)
SUB = re.compile(
    r"(\d+) - (\d+), borrow (\d): (\d)( \+ 10)? - (\d) - (\d) = (\d+), so far (\d+), borrow (\d)"
)


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_addition_lines_peel_one_digit_and_carry_right(a: int, b: int) -> None:
    lines = arith.add_lines(a, b)
    top, bottom, carry, so_far = str(a), str(b), 0, ""
    for line in lines:
        m = ADD.fullmatch(line)
        if m is None:  # only a final carry may follow the columns
            assert line == f"bring down the carry 1, so far 1{so_far}"
            so_far = "1" + so_far
            continue
        t, u, c, x, y, c2, s, sf, c_out = m.groups()
        assert (t, u) == (top or "0", bottom or "0")
        assert (x, y) == (t[-1], u[-1]) and int(c) == int(c2) == carry
        assert int(s) == int(x) + int(y) + carry
        assert sf == str(int(s) % 10) + so_far and int(c_out) == int(s) // 10
        top, bottom, carry, so_far = top[:-1], bottom[:-1], int(c_out), sf
    assert int(so_far) == a + b
    assert arith.trace(a, b, "add")[0].endswith(f"Answer: {a + b}")


@given(st.integers(0, 10**6), st.integers(0, 10**6))
def test_subtraction_lines_peel_one_digit_and_borrow_right(a: int, b: int) -> None:
    a, b = max(a, b), min(a, b)
    top, bottom, borrow, so_far = str(a), str(b), 0, ""
    for line in arith.sub_lines(a, b):
        m = SUB.fullmatch(line)
        assert m is not None, line
        t, u, br, x, ten, y, br2, d, sf, br_out = m.groups()
        assert (t, u) == (top or "0", bottom or "0")
        assert (x, y) == (t[-1], u[-1]) and int(br) == int(br2) == borrow
        assert int(d) == int(x) + (10 if ten else 0) - int(y) - borrow and 0 <= int(d) <= 9
        assert bool(ten) == (int(x) - int(y) - borrow < 0) and int(br_out) == int(bool(ten))
        assert sf == d + so_far
        top, bottom, borrow, so_far = top[:-1], bottom[:-1], int(br_out), sf
    assert int(so_far) == a - b and borrow == 0


WORD = st.text(alphabet="abcdefghij", min_size=2, max_size=12)


@given(WORD, st.sampled_from(strings.OPS), st.integers(1, 11), st.sampled_from("abcxyz"))
def test_string_solutions_peel_one_letter_per_line(s: str, op: str, k: int, c: str) -> None:
    k = min(k, len(s) - 1) if op in ("first", "last") else k
    if op == "lower":
        s = s.upper()
    answer, lines = strings.solve(op, s, k, c)
    body = lines[1:]
    if op == "repeat":
        assert len(body) == k
        for i, line in enumerate(body, 1):  # one copy per line, appended to the result so far
            assert line == f"copy {i} of {k}: {s}, so far {s * i}"
        assert answer == s * k
        return
    rests = [line.split(":")[0] for line in body]
    assert rests[0] == s
    for before, after in itertools.pairwise(rests):
        assert len(after) == len(before) - 1
        if op in ("reverse", "last"):
            assert after == before[:-1]
        elif op == "sort":
            assert after == before.replace(min(before), "", 1)
        else:
            assert after == before[1:]
    if op == "count":  # the letter counted is restated next to the letter compared
        assert all(f", is it {c}? " in line for line in body)
    taken = [re.search(r"(?:first|last|smallest) (\w)", line) for line in body]
    if op != "length":
        for rest, m in zip(rests, taken, strict=True):
            assert m is not None
            want = {"reverse": rest[-1], "last": rest[-1], "sort": min(rest)}.get(op, rest[0])
            assert m.group(1) == want
    last = body[-1]
    if op in ("count", "length"):
        assert last.endswith(f"count {answer}")
    else:
        assert f"so far {answer}" in last
    assert len(body) == (k if op in ("first", "last") else len(s))
