"""`icl`: in-context rule induction; the rule exists only in the prompt.

Each problem draws a fresh rule — a shift cipher on words, an affine map x -> (a*x + b) mod m, or
an operation on a list of digits — shows k input/output examples of it and asks for the output
of a new input. With k = 0 nothing about the rule is given, so accuracy sits near chance; it
should rise with k. The canonical key is the rule and the query input.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

from lmlab.data.world.base import (
    ANSWER_PREFIX,
    Family,
    Knob,
    Problem,
    Split,
    normalize_text,
    phrase,
)

HEADERS = [
    "Learn the rule from the examples, then apply it.",
    "Each input is turned into an output by the same rule. Find the missing output.",
    "Work out the pattern in these pairs and complete the last one.",
    "Infer the mapping from the examples and apply it to the final input.",
    "The pairs below follow one hidden rule. What is the last output?",
    "Figure out the rule behind these examples and use it on the new input.",
    "Study the input/output pairs and fill in the blank.",
    "Every example uses the same transformation. Apply it to the last input.",
]
RULES = ("cipher", "affine", "list")
LIST_OPS = ("reverse", "sort", "add", "drop_first", "rotate")


Rule = tuple[str, str, Callable[[], str], Callable[[str], str]]


def _rule(rng: random.Random, kind: str) -> Rule:
    """(key, description, input sampler, function) of a freshly drawn rule."""
    if kind == "cipher":
        shift = rng.randint(1, 25)
        abc = string.ascii_lowercase

        def cipher(w: str) -> str:
            return "".join(abc[(abc.index(ch) + shift) % 26] for ch in w)

        def word() -> str:
            return "".join(rng.choice(abc) for _ in range(rng.randint(3, 5)))

        return f"cipher{shift}", f"shift each letter forward by {shift}", word, cipher
    if kind == "affine":
        m = rng.randint(5, 13)
        a, b = rng.randint(1, m - 1), rng.randint(0, m - 1)
        return (
            f"affine{a},{b},{m}",
            f"output = ({a} * input + {b}) mod {m}",
            lambda: str(rng.randrange(m)),
            lambda x: str((a * int(x) + b) % m),
        )
    op = rng.choice(LIST_OPS)
    c = rng.randint(1, 9)
    funcs: dict[str, tuple[str, Callable[[list[int]], list[int]]]] = {
        "reverse": ("reverse the list", lambda xs: xs[::-1]),
        "sort": ("sort the list in increasing order", sorted),
        "add": (f"add {c} to every digit, modulo 10", lambda xs: [(x + c) % 10 for x in xs]),
        "drop_first": ("drop the first element", lambda xs: xs[1:]),
        "rotate": ("move the first element to the end", lambda xs: [*xs[1:], xs[0]]),
    }
    desc, f = funcs[op]

    def digits() -> str:
        return " ".join(str(rng.randrange(10)) for _ in range(rng.randint(3, 5)))

    def apply(xs: str) -> str:
        return " ".join(map(str, f([int(x) for x in xs.split()])))

    return f"list-{op}" + (f"{c}" if op == "add" else ""), desc, digits, apply


def make(rng: random.Random, knobs: dict[str, Any], split: Split) -> Problem:
    kind = knobs["rule"] if knobs["rule"] != "any" else rng.choice(RULES)
    key, desc, draw, f = _rule(rng, kind)
    query = draw()
    examples: list[str] = []
    for _ in range(100 * (knobs["k"] + 1)):  # distinct example inputs, none equal to the query
        if len(examples) == knobs["k"]:
            break
        x = draw()
        if x != query and x not in examples:
            examples.append(x)
    lines = [phrase(rng, HEADERS, split), *(f"{x} -> {f(x)}" for x in examples), f"{query} -> ?"]
    answer = f(query)
    trace = f"The rule: {desc}.\n{query} -> {answer}\n{ANSWER_PREFIX} {answer}"
    return Problem("icl", "\n".join(lines), answer, trace, f"{key}|{query}", {"rule": kind})


FAMILY = Family(
    name="icl",
    doc="in-context rule induction (cipher, affine map mod m, list operation) from k examples",
    knobs={
        "k": Knob("number of input/output examples", 4, lo=0, hi=16, mix=(0, 8)),
        "rule": Knob("rule family", "any", choices=("any", *RULES)),
    },
    primary="k",
    make=make,
    normalize=normalize_text,
)
