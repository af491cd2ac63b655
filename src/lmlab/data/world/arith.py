"""`arith`: n-digit addition, subtraction and multiplication with digit-by-digit traces.

Addition and subtraction traces go right to left, one line per digit: the operands left to
process (so the column's digits are the last digit of each, next to where the model writes), the
column sum with its carry (or borrow), and the answer built so far, so the final answer is
copied rather than reassembled. The multiplication trace lists the partial products (one per
digit of the second factor) and then adds them up one at a time.
"""

from __future__ import annotations

import random
from typing import Any

from lmlab.data.world.base import (
    ANSWER_PREFIX,
    Family,
    Knob,
    Problem,
    Split,
    normalize_int,
    phrase,
)

OPS = {"add": "+", "sub": "-", "mul": "*"}

TEMPLATES = [
    "What is {a} {op} {b}?",
    "Compute {a} {op} {b}.",
    "Calculate {a} {op} {b}.",
    "{a} {op} {b} = ?",
    "Find the value of {a} {op} {b}.",
    "Work out {a} {op} {b}.",
    "What do you get for {a} {op} {b}?",
    "What does {a} {op} {b} equal?",
    "{a} {op} {b} is what?",
    "Evaluate {a} {op} {b}.",
    "{a} {op} {b}: what is the result?",
    "Tell me the result of {a} {op} {b}.",
    "Solve {a} {op} {b}.",
    "{a} {op} {b} makes how much?",
    "Give the result of {a} {op} {b}.",
    "How much is {a} {op} {b}?",
]


def _operand(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _columns(a: int, b: int) -> list[tuple[str, str]]:
    """The operands still to process before each column: both numbers, then both without their
    last digit, and so on (an exhausted operand shows as 0)."""
    xs, ys = str(a), str(b)
    cols = []
    for i in range(max(len(xs), len(ys))):
        cols.append((xs[: max(0, len(xs) - i)] or "0", ys[: max(0, len(ys) - i)] or "0"))
    return cols


def add_lines(a: int, b: int) -> list[str]:
    """Column addition of two non-negative integers, least significant digit first.

    Each line restates what is left of both operands, so the digits of the column are the last
    digit of each: the model reads them next to where it writes, and the next line's operands
    are a copy of this line's minus one digit. The answer is built up in "so far"."""
    lines, carry, so_far = [], 0, ""
    for top, bottom in _columns(a, b):
        x, y = int(top[-1]), int(bottom[-1])
        s = x + y + carry
        so_far = str(s % 10) + so_far
        lines.append(
            f"{top} + {bottom}, carry {carry}: {x} + {y} + {carry} = {s}, "
            f"so far {so_far}, carry {s // 10}"
        )
        carry = s // 10
    if carry:
        lines.append(f"bring down the carry {carry}, so far {carry}{so_far}")
    return lines


def sub_lines(a: int, b: int) -> list[str]:
    """Column subtraction a - b of non-negative integers with a >= b, with borrows, laid out
    like `add_lines`."""
    lines, borrow, so_far = [], 0, ""
    for top, bottom in _columns(a, b):
        x, y = int(top[-1]), int(bottom[-1])
        d = x - y - borrow
        head = f"{top} - {bottom}, borrow {borrow}: "
        if d < 0:
            so_far = str(d + 10) + so_far
            lines.append(f"{head}{x} + 10 - {y} - {borrow} = {d + 10}, so far {so_far}, borrow 1")
            borrow = 1
        else:
            so_far = str(d) + so_far
            lines.append(f"{head}{x} - {y} - {borrow} = {d}, so far {so_far}, borrow 0")
            borrow = 0
    return lines


def mul_lines(a: int, b: int) -> list[str]:
    """Long multiplication: one partial product per digit of b, then their running sum."""
    partials = []
    lines = []
    for i, digit in enumerate(str(b)[::-1]):
        place = int(digit) * 10**i
        partials.append(a * place)
        lines.append(f"{a} * {place} = {a * place}")
    total = partials[0]
    for p in partials[1:]:
        lines.append(f"{total} + {p} = {total + p}")
        total += p
    return lines


def trace(a: int, b: int, op: str) -> tuple[str, int]:
    """The worked solution (ending in the answer line) and the result of `a op b`."""
    if op == "add":
        result, lines = a + b, ["Add the digits from right to left.", *add_lines(a, b)]
    elif op == "sub":
        result = a - b
        if a >= b:
            lines = ["Subtract the digits from right to left.", *sub_lines(a, b)]
        else:
            lines = [f"{a} is less than {b}, so compute {b} - {a} and negate it.", *sub_lines(b, a)]
    else:
        result, lines = (
            a * b,
            ["Multiply by each digit of the second number, then add.", *mul_lines(a, b)],
        )
    return "\n".join([*lines, f"{ANSWER_PREFIX} {result}"]), result


def make(rng: random.Random, knobs: dict[str, Any], split: Split) -> Problem:
    op = knobs["op"] if knobs["op"] != "any" else rng.choice(list(OPS))
    a, b = _operand(rng, knobs["digits"]), _operand(rng, knobs["digits"])
    text, result = trace(a, b, op)
    question = phrase(rng, TEMPLATES, split).format(a=a, b=b, op=OPS[op])
    return Problem("arith", question, str(result), text, f"{a}{OPS[op]}{b}", {"a": a, "b": b})


FAMILY = Family(
    name="arith",
    doc="n-digit addition, subtraction and multiplication (digit-by-digit traces)",
    knobs={
        "digits": Knob("digits per operand", 3, lo=1, hi=12, mix=(1, 4)),
        "op": Knob("operation", "any", choices=("any", *OPS)),
    },
    primary="digits",
    make=make,
    normalize=normalize_int,
    numeric=True,
)
