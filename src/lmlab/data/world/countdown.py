"""`countdown`: reach a target from given numbers with + - * / (the Game of 24, generalised).

A problem is made by combining random numbers with random exact operations, so it is solvable
by construction and the construction is the worked solution (one equation per step). Many
expressions can be right, so the verifier parses the proposed expression (Python syntax, only
integers, parentheses and + - * /), checks that it uses each given number exactly once and
evaluates it exactly with fractions. `solve` finds a solution by exhaustive search, and
`steps_valid` (the family's step checker) judges a partial worked solution line by line.
"""

from __future__ import annotations

import ast
import random
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from lmlab.data.world.base import (
    ANSWER_PREFIX,
    Family,
    Knob,
    Problem,
    Split,
    extract_answer,
    phrase,
)

TEMPLATES = [
    "Use the numbers {nums} to make {target}. Use each number once with + - * /.",
    "Reach {target} using {nums}, each exactly once, and the operations + - * /.",
    "Combine {nums} with + - * / to get {target}. Every number must be used once.",
    "With {nums} and + - * /, write an expression equal to {target} using each number once.",
    "Make {target} from {nums} using + - * / and each number exactly once.",
    "Find an expression that equals {target} using each of {nums} once (+ - * / allowed).",
    "Get {target} from the numbers {nums}; use + - * / and each number one time.",
    "Build {target} out of {nums} with + - * /, using every number exactly once.",
]

MAX_TARGET = 999
MAX_EXPR_CHARS = 200


def _combine(a: Fraction, b: Fraction, op: str) -> Fraction | None:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b if b != 0 else None


def _wrap(expr: str) -> str:
    return f"({expr})" if " " in expr else expr


def make(rng: random.Random, knobs: dict[str, Any], split: Split) -> Problem:
    while True:
        nums = [rng.randint(1, knobs["largest"]) for _ in range(knobs["numbers"])]
        pool = [(Fraction(n), str(n)) for n in nums]
        lines = []
        while len(pool) > 1:
            i, j = rng.sample(range(len(pool)), 2)
            (a, ea), (b, eb) = pool[i], pool[j]
            options = ["+", "*"]  # only exact steps with positive whole intermediate results
            if a > b:
                options.append("-")
            if b != 1 and a % b == 0:
                options.append("/")
            op = rng.choice(options)
            c = _combine(a, b, op)
            assert c is not None
            lines.append(f"{a} {op} {b} = {c}")
            pool = [p for k, p in enumerate(pool) if k not in (i, j)]
            pool.append((c, f"{_wrap(ea)} {op} {_wrap(eb)}"))
        target, expr = pool[0]
        if target.denominator == 1 and 1 <= target <= MAX_TARGET:
            break
    target_i = int(target)
    shown = ", ".join(map(str, nums))
    question = phrase(rng, TEMPLATES, split).format(nums=shown, target=target_i)
    trace = "\n".join([*lines, f"{ANSWER_PREFIX} {expr}"])
    key = f"{sorted(nums)}->{target_i}"
    return Problem("countdown", question, expr, trace, key, {"numbers": nums, "target": target_i})


_EXPRESSION_CHARS = re.compile(r"[0-9\s()+\-*/×÷]*")


def evaluate(expr: str) -> tuple[Fraction, list[int]] | None:
    """Exact value of an expression of integers and + - * / and the integers it uses, or None
    if it is not such an expression (or divides by zero)."""
    if len(expr) > MAX_EXPR_CHARS or not _EXPRESSION_CHARS.fullmatch(expr):
        return None  # Python's parser would also read comments (#...) and 1_000-style numbers
    try:
        tree = ast.parse(expr.replace("×", "*").replace("÷", "/"), mode="eval")
    except (SyntaxError, ValueError):
        return None
    used: list[int] = []

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left), ev(node.right)
            ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
            op = ops.get(type(node.op))
            if op is None:
                raise ValueError("operator not allowed")
            c = _combine(a, b, op)
            if c is None:
                raise ZeroDivisionError
            return c
        raise ValueError("not an arithmetic expression")

    try:
        value = ev(tree.body)
    except (ValueError, ZeroDivisionError):
        return None
    return value, used


def verify(problem: Problem, answer: str) -> bool:
    """Whether `answer` is an expression using each given number once that equals the target."""
    result = evaluate(extract_answer(answer) if "\n" in answer else answer.strip().rstrip("."))
    if result is None:
        return False
    value, used = result
    return Counter(used) == Counter(problem.data["numbers"]) and value == problem.data["target"]


def solve(numbers: list[int], target: int) -> str | None:
    """An expression reaching `target` with each number once, by exhaustive search, or None."""

    def search(pool: list[tuple[Fraction, str]]) -> str | None:
        if len(pool) == 1:
            return pool[0][1] if pool[0][0] == target else None
        for i in range(len(pool)):
            for j in range(len(pool)):
                if i == j:
                    continue
                rest = [p for k, p in enumerate(pool) if k not in (i, j)]
                (a, ea), (b, eb) = pool[i], pool[j]
                for op in "+-*/":
                    if op in "+*" and i > j:
                        continue  # commutative: try each unordered pair once
                    c = _combine(a, b, op)
                    if c is None:
                        continue
                    found = search([*rest, (c, f"{_wrap(ea)} {op} {_wrap(eb)}")])
                    if found:
                        return found
        return None

    return search([(Fraction(n), str(n)) for n in numbers])


_STEP = re.compile(r"^\s*(\d+(?:/\d+)?)\s*([-+*/])\s*(\d+(?:/\d+)?)\s*=\s*(-?\d+(?:/\d+)?)\s*$")


def steps_valid(problem: Problem, lines: Sequence[str]) -> bool:
    """Whether every written step `a op b = c` is exact arithmetic on numbers still in hand
    (the result goes back into the hand), as in countdown's worked solutions, and a hand down
    to one number holds the target (no search ahead: an open state is never judged hopeless)."""
    hand = Counter(Fraction(n) for n in problem.data["numbers"])
    for line in lines:
        if line.lstrip().startswith(ANSWER_PREFIX):
            continue
        m = _STEP.match(line)
        if m is None:
            return False
        a, op, b, c = Fraction(m[1]), m[2], Fraction(m[3]), Fraction(m[4])
        for x in (a, b):
            if hand[x] < 1:
                return False
            hand[x] -= 1
        if op == "/" and b == 0:
            return False
        exact = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]
        if exact != c:
            return False
        hand[c] += 1
    left = [x for x, count in hand.items() for _ in range(count)]
    return len(left) > 1 or left == [problem.data["target"]]


FAMILY = Family(
    name="countdown",
    doc="reach a target from given numbers with + - * / (each number once)",
    knobs={
        "numbers": Knob("how many starting numbers", 4, lo=2, hi=6, mix=(2, 4)),
        "largest": Knob("largest starting number", 10, lo=2, hi=100),
    },
    primary="numbers",
    make=make,
    normalize=lambda s: s.strip().rstrip(".").replace(" ", ""),
    verify=verify,
    step_check=steps_valid,
)
