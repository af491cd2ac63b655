"""The task world: lmlab's built-in, offline, verifiable data, and its one task registry.

Families (one module each): `arith`, `chain`, `countdown`, `strings`, `icl`. Everything that
needs tasks — the `world` pretraining corpus, SFT data, evaluation — draws them through
`generate` (one family, fixed knobs) or `mixed` (all families by weight, knobs drawn per
problem from each knob's mix range).

What a task gives (see `base`): a problem is asked with `prompt`/`messages`/`prompt_ids` and
answered by `response`; its family (`family(problem.task)`) grades replies (`Family.grade`),
rewards them (`Family.reward`) and judges preferences (`Family.gold_score`). `reward` and
`gold_score` here are the same for any world problem: the defaults that RL and preference code
take as injected functions.

Task specs name a family and optionally its knobs: `arith`, `arith:3` (the primary knob),
`arith:3:op=add`, `icl:k=8:rule=affine`.

The `world` corpus source (`--corpus world`, or `world:OPTIONS` such as
`world:n=20000:arith=3:strings=2:stdlib=0.2`, or with knobs `arith.op=add:icl.k=4-8`) holds
train-split problems only, as plain-text documents: a question with its direct answer, or with a
worked solution (`cot` fraction, or `TASK.cot`), ICL episodes included; optionally mixed with
python-stdlib files (`stdlib` fraction of documents).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from lmlab.data.corpus import Corpus, python_stdlib, split_docs
from lmlab.data.world import arith, chain, countdown, icl, strings
from lmlab.data.world.base import (
    ANSWER_PREFIX,
    SPLITS,
    STEP_BY_STEP,
    Family,
    Grade,
    Knob,
    Problem,
    Split,
    StepCheck,
    WorldError,
    extract_answer,
    key_split,
    messages,
    prompt,
    prompt_ids,
    response,
)

__all__ = [
    "ANSWER_PREFIX",
    "FAMILIES",
    "STEP_BY_STEP",
    "Family",
    "Grade",
    "Knob",
    "Problem",
    "StepCheck",
    "WorldError",
    "extract_answer",
    "family",
    "generate",
    "gold_score",
    "messages",
    "mixed",
    "parse_options",
    "parse_task",
    "prompt",
    "prompt_ids",
    "response",
    "reward",
    "world_corpus",
]

FAMILIES: dict[str, Family] = {
    f.name: f for f in (arith.FAMILY, chain.FAMILY, countdown.FAMILY, strings.FAMILY, icl.FAMILY)
}

DEFAULT_WEIGHTS: dict[str, float] = {
    "arith": 3.0,
    "chain": 2.0,
    "countdown": 1.0,
    "strings": 3.0,
    "icl": 2.0,
}

MAX_TRIES = 10_000


def family(name: str) -> Family:
    """The family called `name`, or WorldError listing the known ones."""
    if name not in FAMILIES:
        raise WorldError(f"unknown task {name!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[name]


def parse_task(spec: str) -> tuple[str, dict[str, Any]]:
    """'arith:3:op=add' -> ('arith', {'digits': 3, 'op': 'add'}), knobs checked."""
    name, *parts = spec.strip().split(":")
    fam = family(name)
    overrides: dict[str, Any] = {}
    for part in parts:
        knob, eq, value = part.partition("=")
        if not eq:
            knob, value = fam.primary, part
        overrides[knob.strip()] = value.strip()
    return name, fam.resolve(overrides)


def _check_split(split: str) -> Split:
    if split not in SPLITS:
        raise WorldError(f"split must be train or test, got {split!r}")
    return split  # type: ignore[return-value]


def draw(fam: Family, rng: random.Random, knobs: dict[str, Any], split: Split) -> Problem:
    """One problem of `split` (rejecting candidates whose key hashes into the other split)."""
    for _ in range(MAX_TRIES):
        p = fam.make(rng, knobs, split)
        if key_split(fam.name, p.key) == split:
            return p
    raise WorldError(f"{fam.name}: no {split} problem found with {knobs}; the space is too small")


def generate(task: str, n: int, seed: int = 0, split: str = "train", **knobs: Any) -> list[Problem]:
    """`n` problems of one family with fixed knobs; the same arguments give the same problems."""
    fam = family(task)
    values = fam.resolve(knobs)
    split_ = _check_split(split)
    if n < 0:
        raise WorldError(f"n must be >= 0, got {n}")
    rng = random.Random(f"{task}|{split}|{seed}|{sorted(values.items())}")
    return [draw(fam, rng, values, split_) for _ in range(n)]


Knobs = dict[str, dict[str, Any]]
"""Per-task knob settings of a mix: task -> knob -> a value, or (lo, hi) drawn per problem."""


def mix_knobs(
    fam: Family, rng: random.Random, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Knobs for one problem of a mix: integer knobs drawn from their mix range, or as
    `overrides` say (a fixed value, or a (lo, hi) range to draw from)."""
    over = overrides or {}
    out: dict[str, Any] = {}
    for name, knob in fam.knobs.items():
        value = over.get(name)
        if isinstance(value, tuple):
            out[name] = rng.randint(*value)
        elif value is not None:
            out[name] = value
        else:
            out[name] = rng.randint(*knob.mix) if knob.mix else knob.default
    return out


def _check_weights(weights: dict[str, float]) -> dict[str, float]:
    for name, w in weights.items():
        family(name)
        if w < 0:
            raise WorldError(f"weight of {name} must be >= 0, got {w}")
    if not any(w > 0 for w in weights.values()):
        raise WorldError("at least one task weight must be positive")
    return weights


def mixed(
    n: int,
    seed: int = 0,
    split: str = "train",
    weights: dict[str, float] | None = None,
    knobs: Knobs | None = None,
) -> list[Problem]:
    """`n` problems from all families by `weights` (default DEFAULT_WEIGHTS), with knobs drawn
    from their mix ranges unless `knobs` set them; deterministic."""
    w = _check_weights(weights if weights is not None else DEFAULT_WEIGHTS)
    split_ = _check_split(split)
    rng = random.Random(f"mix|{split}|{seed}")
    names = [k for k in w if w[k] > 0]
    over = knobs or {}
    out = []
    for _ in range(n):
        fam = FAMILIES[rng.choices(names, [w[k] for k in names])[0]]
        out.append(draw(fam, rng, mix_knobs(fam, rng, over.get(fam.name)), split_))
    return out


def reward(problem: Problem, reply: str) -> float:
    """The verifiable reward of a reply to any world problem: 1 if its family's verifier
    accepts the answer, else 0 (GRPO's default reward)."""
    return family(problem.task).reward(problem, reply)


def gold_score(problem: Problem, reply: str) -> float:
    """The world's hidden gold preference of a reply to any world problem (see
    `Family.gold_score`): the default judge of preference data, PPO's gold log and win rates."""
    return family(problem.task).gold_score(problem, reply)


def render(problem: Problem, worked: bool) -> str:
    """A problem as a plain-text document: question and answer, or question and worked solution."""
    if worked:
        return f"Question: {prompt(problem, True)}\n{problem.trace}\n"
    return f"Question: {problem.question}\n{ANSWER_PREFIX} {problem.answer}\n"


def world_corpus(
    val_fraction: float = 0.02,
    n: int = 100_000,
    weights: dict[str, float] | None = None,
    cot: float = 0.5,
    stdlib: float = 0.0,
    seed: int = 0,
    knobs: Knobs | None = None,
    cots: dict[str, float] | None = None,
) -> Corpus:
    """The `world` pretraining corpus: `n` train-split problems as documents (a `cot` fraction
    with worked solutions, or `cots[task]` for a task), plus python-stdlib files making up a
    `stdlib` fraction of documents. Validation documents are held out by problem key, so no
    problem is on both sides."""
    if n < 2:
        raise WorldError(f"world corpus needs n >= 2 documents, got {n}")
    fractions = {**{t: cot for t in FAMILIES}, **(cots or {})}
    if not all(0 <= f <= 1 for f in fractions.values()) or not 0 <= stdlib < 1:
        raise WorldError("world corpus needs 0 <= cot <= 1 and 0 <= stdlib < 1")
    problems = mixed(n, seed, "train", weights, knobs)
    rng = random.Random(f"world-corpus|{seed}")
    keys = [f"val|{p.task}|{p.key}" for p in problems]  # salted: split keys hash >= 0.2
    docs = [render(p, rng.random() < fractions[p.task]) for p in problems]
    corpus = split_docs("world", keys, docs, val_fraction)
    if stdlib > 0:
        py = python_stdlib()
        extra = round(len(corpus.train) * stdlib / (1 - stdlib))
        corpus.train += py.train[:extra]
        corpus.val += py.val[: max(1, round(len(corpus.val) * stdlib / (1 - stdlib)))]
        random.Random(seed).shuffle(corpus.train)
    return corpus


def parse_options(options: str) -> dict[str, Any]:
    """`world_corpus` keyword arguments from `n=20000:cot=0.3:arith=3:arith.op=add:icl.k=4-8`:
    n=, cot=, stdlib=, seed=, per-task weights TASK=W (tasks not named get weight 0 once any
    weight is given), knobs TASK.KNOB=VALUE (an integer range LO-HI is drawn per problem) and
    per-task worked-solution fractions TASK.cot=F."""
    kw: dict[str, Any] = {}
    weights: dict[str, float] = {}
    knobs: Knobs = {}
    cots: dict[str, float] = {}
    for part in filter(None, options.split(":")):
        name, eq, value = part.partition("=")
        if not eq:
            raise WorldError(f"world corpus option {part!r} is not NAME=VALUE")
        task, dot, knob = name.partition(".")
        try:
            if dot:
                fam = family(task)
                if knob == "cot":
                    cots[task] = float(value)
                else:
                    knobs.setdefault(task, {})[knob] = _knob_value(fam, knob, value)
            elif name in ("n", "seed"):
                kw[name] = int(value)
            elif name in ("cot", "stdlib"):
                kw[name] = float(value)
            else:
                family(name)
                weights[name] = float(value)
        except ValueError as e:
            if isinstance(e, WorldError):
                if not dot and name not in FAMILIES:
                    raise WorldError(
                        f"unknown world corpus option {name!r}; use n, cot, stdlib, seed, a task, "
                        "TASK.KNOB or TASK.cot"
                    ) from None
                raise
            raise WorldError(f"world corpus option {name}: bad value {value!r}") from None
    if weights:
        kw["weights"] = weights
    if knobs:
        kw["knobs"] = knobs
    if cots:
        kw["cots"] = cots
    return kw


def _knob_value(fam: Family, name: str, value: str) -> Any:
    """A knob's value from an option: checked, and LO-HI for a range of an integer knob."""
    if name not in fam.knobs:
        raise WorldError(f"{fam.name}: unknown setting {name!r}; it has {', '.join(fam.knobs)}")
    knob = fam.knobs[name]
    lo, dash, hi = value.partition("-")
    if dash and not knob.choices:
        a, b = knob.check(fam.name, name, lo), knob.check(fam.name, name, hi)
        if a > b:  # type: ignore[operator]
            raise WorldError(f"{fam.name}: range {value} of {name} is empty")
        return (a, b)
    return knob.check(fam.name, name, value)


def world_source(options: str) -> Callable[[float], Corpus]:
    """A corpus loader for `world:OPTIONS` (see `parse_options`)."""
    kw = parse_options(options)
    return lambda val_fraction: world_corpus(val_fraction, **kw)
