"""`chain`: templated multi-step word problems (people, objects, quantities, rates).

A person starts with some objects and then 1 to 4 events change the count: finding or being given
more, giving some away, buying packs, collecting at a rate for some hours, splitting into equal
piles. The trace is one equation per step. The canonical key is the start count and the
arithmetic of each step, so the same numbers told about another person are the same problem.
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

NAMES = [
    "Ana",
    "Ben",
    "Cara",
    "Dev",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jia",
    "Kai",
    "Lena",
    "Mo",
    "Nia",
    "Omar",
    "Pia",
    "Raj",
    "Sara",
    "Tom",
    "Uma",
]
OBJECTS = [
    "apples",
    "marbles",
    "stickers",
    "coins",
    "books",
    "pencils",
    "shells",
    "cards",
    "stamps",
    "beads",
]

QUESTIONS = [
    "How many {obj} does {name} have now?",
    "How many {obj} does {name} have at the end?",
    "What is the number of {obj} {name} has now?",
    "In the end, how many {obj} are with {name}?",
    "How many {obj} does {name} end up with?",
    "After all that, how many {obj} does {name} hold?",
    "Count the {obj} {name} has after these events.",
    "What is {name}'s final number of {obj}?",
]

MAX_COUNT = 200


def _step(rng: random.Random, q: int, name: str, other: str, obj: str) -> tuple[str, str, str, int]:
    """One event: (sentence, equation, key fragment, new count)."""
    kinds = ["gain", "packs", "rate"]
    if q >= 2:
        kinds.append("lose")
    divisors = [d for d in (2, 3, 4) if q % d == 0]
    if divisors:
        kinds.append("share")
    kind = "lose" if q > MAX_COUNT else rng.choice(kinds)  # past the cap, only losses
    if kind == "gain":
        k = rng.randint(2, 15)
        text = rng.choice([f"{name} finds {k} more {obj}.", f"{other} gives {name} {k} {obj}."])
        return text, f"{q} + {k} = {q + k}", f"+{k}", q + k
    if kind == "lose":
        k = rng.randint(max(1, q - MAX_COUNT), q - 1)
        text = rng.choice([f"{name} gives {k} {obj} to {other}.", f"{name} loses {k} {obj}."])
        return text, f"{q} - {k} = {q - k}", f"-{k}", q - k
    if kind == "packs":
        p, m = rng.randint(2, 5), rng.randint(2, 6)
        text = f"{name} buys {p} packs of {obj} with {m} {obj} in each pack."
        return text, f"{q} + {p} * {m} = {q + p * m}", f"+{p}*{m}", q + p * m
    if kind == "rate":
        r, h = rng.randint(2, 6), rng.randint(2, 5)
        text = f"{name} collects {r} {obj} per hour for {h} hours."
        return text, f"{q} + {r} * {h} = {q + r * h}", f"+{r}x{h}", q + r * h
    d = rng.choice(divisors)
    text = f"{name} splits the {obj} into {d} equal piles and keeps one pile."
    return text, f"{q} / {d} = {q // d}", f"/{d}", q // d


def make(rng: random.Random, knobs: dict[str, Any], split: Split) -> Problem:
    name, other = rng.sample(NAMES, 2)
    obj = rng.choice(OBJECTS)
    q = rng.randint(2, 20)
    sentences, lines, key = [f"{name} has {q} {obj}."], [f"Start: {q}"], [str(q)]
    for i in range(knobs["steps"]):
        text, eq, frag, q = _step(rng, q, name, other, obj)
        sentences.append(text)
        lines.append(f"Step {i + 1}: {eq}")
        key.append(frag)
    sentences.append(phrase(rng, QUESTIONS, split).format(obj=obj, name=name))
    trace = "\n".join([*lines, f"{ANSWER_PREFIX} {q}"])
    return Problem("chain", " ".join(sentences), str(q), trace, " ".join(key))


FAMILY = Family(
    name="chain",
    doc="multi-step word problems (1 to 4 steps; one equation per step)",
    knobs={"steps": Knob("number of events after the start", 2, lo=1, hi=4, mix=(1, 4))},
    primary="steps",
    make=make,
    normalize=normalize_int,
    numeric=True,
)
