"""The task world: determinism, disjoint splits, knobs, the corpus and `lmlab world`."""

from __future__ import annotations

import json
import re

import pytest

from lmlab.cli import main
from lmlab.data import world
from lmlab.data.corpora import SOURCES, load_corpus
from lmlab.data.world import arith, chain, countdown, icl, strings
from lmlab.data.world.base import STEP_BY_STEP as STEP
from lmlab.data.world.base import expand, key_split, split_templates, word_distance

TASKS = list(world.FAMILIES)
TEMPLATE_LISTS: dict[str, list[tuple[list[str], list[str]]]] = {
    "arith": [(arith.TEMPLATES, [])],
    "chain": [(chain.QUESTIONS, [])],
    "countdown": [(countdown.TEMPLATES, [])],
    "strings": [(ts, strings.extra_phrasings()[op]) for op, ts in strings.TEMPLATES.items()],
    "icl": [(icl.HEADERS, [])],
}
"""Each family's template lists with their training-only phrasings."""


def _templates(task: str, split: str) -> set[str]:
    return {t for ts, extra in TEMPLATE_LISTS[task] for t in split_templates(ts, extra)[split]}


def _matching_templates(task: str, question: str) -> set[str]:
    """The templates that could have produced `question`'s instruction."""
    text = question.splitlines()[0] if task == "icl" else question
    found = set()
    for ts, extra in TEMPLATE_LISTS[task]:
        for t in [*ts, *extra]:
            pattern = "(.+?)".join(re.escape(part) for part in re.split(r"\{[a-z]+\}", t))
            if re.fullmatch((".* " if task == "chain" else "") + pattern, text, re.DOTALL):
                found.add(t)
    return found


@pytest.mark.parametrize("task", TASKS)
def test_generator_is_deterministic_from_its_seed(task: str) -> None:
    a = world.generate(task, 20, seed=7)
    assert a == world.generate(task, 20, seed=7)
    assert a != world.generate(task, 20, seed=8)
    assert [p.data for p in a] == [p.data for p in world.generate(task, 20, seed=7)]


def test_mix_is_deterministic_and_covers_every_family() -> None:
    a = world.mixed(200, seed=3)
    assert a == world.mixed(200, seed=3)
    assert {p.task for p in a} == set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_train_and_test_share_no_problem_and_no_phrasing(task: str) -> None:
    train = world.generate(task, 300, seed=0, split="train")
    test = world.generate(task, 300, seed=0, split="test")
    assert {p.key for p in train}.isdisjoint({p.key for p in test})
    assert all(key_split(task, p.key) == "train" for p in train)
    assert all(key_split(task, p.key) == "test" for p in test)
    assert _templates(task, "train").isdisjoint(_templates(task, "test"))
    for split, problems in (("train", train), ("test", test)):
        for p in problems:
            used = _matching_templates(task, p.question)
            assert used, p.question
            assert used <= _templates(task, split), (split, p.question, used)


@pytest.mark.parametrize(
    ("task", "knobs", "check"),
    [
        ("arith", {"digits": 4, "op": "add"}, lambda p: len(str(p.data["a"])) == 4),
        ("arith", {"digits": 1, "op": "mul"}, lambda p: " * " in p.question),
        ("chain", {"steps": 4}, lambda p: p.trace.count("Step ") == 4),
        ("countdown", {"numbers": 3}, lambda p: len(p.data["numbers"]) == 3),
        ("strings", {"length": 9, "op": "reverse"}, lambda p: len(p.answer) == 9),
        ("icl", {"k": 5, "rule": "cipher"}, lambda p: p.question.count(" -> ") == 6),
        ("icl", {"k": 0}, lambda p: p.question.count(" -> ") == 1),
    ],
)
def test_difficulty_knobs_shape_the_problems(task: str, knobs: dict, check) -> None:
    assert all(check(p) for p in world.generate(task, 30, seed=1, **knobs))


def test_traces_end_with_the_answer() -> None:
    for p in world.mixed(300, seed=5):
        assert p.trace.splitlines()[-1] == f"Answer: {p.answer}"
        assert world.extract_answer(p.trace) == p.answer


def test_task_specs_parse_and_bad_ones_are_clear() -> None:
    assert world.parse_task("arith:3:op=add") == ("arith", {"digits": 3, "op": "add"})
    assert world.parse_task("icl:k=8")[1]["k"] == 8
    assert world.parse_task("chain")[1] == {"steps": 2}
    with pytest.raises(world.WorldError, match="unknown task 'algebra'; choose from arith"):
        world.parse_task("algebra")
    with pytest.raises(world.WorldError, match=r"arith: digits must be in 1\.\.12, got 40"):
        world.generate("arith", 1, digits=40)
    with pytest.raises(world.WorldError, match="icl: k must be an integer"):
        world.parse_task("icl:k=many")
    with pytest.raises(world.WorldError, match="strings: op must be one of"):
        world.parse_task("strings:op=shout")
    with pytest.raises(world.WorldError, match="chain: unknown setting 'digits'"):
        world.generate("chain", 1, digits=2)
    with pytest.raises(world.WorldError, match="split must be train or test"):
        world.generate("chain", 1, split="dev")


def test_world_corpus_holds_train_problems_split_by_key() -> None:
    corpus = load_corpus("world:n=3000:seed=1", val_fraction=0.05)
    assert len(corpus.val) > 50
    assert set(corpus.train).isdisjoint(corpus.val)
    docs = corpus.train + corpus.val
    assert any("Think step by step." in d for d in docs)
    assert any(d.count(" -> ") >= 3 for d in docs)  # ICL episodes
    test_questions = {p.question for p in world.mixed(500, seed=1, split="test")}
    assert not any(q in d for d in docs for q in test_questions)
    assert load_corpus("world:n=3000:seed=1", 0.05).fingerprint == corpus.fingerprint
    only = load_corpus("world:n=200:strings=1", 0.05)
    assert all('"' in d for d in only.train)
    with pytest.raises(ValueError, match="unknown world corpus option 'bogus'"):
        load_corpus("world:bogus=1")


def test_world_is_a_named_source() -> None:
    assert "world" in SOURCES


def test_cli_world_sample(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["world", "sample", "--task", "arith", "--digits", "3", "--n", "3", "--op", "add"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("Answer:") == 3 and "carry" in out
    assert main(["world", "sample", "--task", "icl", "--k", "2", "--n", "2", "--json"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and rows[0]["task"] == "icl"
    assert main(["world", "sample", "--task", "arith", "--digits", "30"]) == 2
    assert "digits must be in 1..12" in capsys.readouterr().err
    assert main(["world", "sample", "--task", "nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["world", "list"]) == 0


def test_mix_options_set_weights_knobs_and_worked_solution_fractions() -> None:
    kw = world.parse_options(
        "n=400:arith=1:icl=1:arith.op=add:arith.digits=2-3:icl.k=8:icl.rule=cipher:icl.cot=0"
    )
    assert kw["knobs"] == {
        "arith": {"op": "add", "digits": (2, 3)},
        "icl": {"k": 8, "rule": "cipher"},
    }
    problems = world.mixed(300, 0, "train", kw["weights"], kw["knobs"])
    assert {p.task for p in problems} == {"arith", "icl"}
    sums = [p for p in problems if p.task == "arith"]
    assert all(" + " in p.question for p in sums)
    assert {len(str(p.data["a"])) for p in sums} == {2, 3}
    assert all(p.question.count(" -> ") == 9 for p in problems if p.task == "icl")
    corpus = world.world_corpus(0.05, **kw)
    icl_docs = [d for d in corpus.train if " -> " in d]
    assert icl_docs and not any(STEP in d for d in icl_docs)  # icl.cot=0: direct answers only
    assert any(STEP in d for d in corpus.train)  # the default cot fraction elsewhere
    # no overrides: the same problems as before knobs existed (the default corpus is unchanged)
    assert world.mixed(50, 4) == world.mixed(50, 4, knobs={})
    for bad, msg in [
        ("arith.digits=4-2", "range 4-2 of digits is empty"),
        ("icl.k=0-40", "k must be in 0..16"),
        ("arith.base=2", "unknown setting 'base'"),
        ("algebra.cot=1", "unknown task 'algebra'"),
    ]:
        with pytest.raises(world.WorldError, match=msg):
            world.parse_options(bad)


def test_training_phrasings_stay_far_from_held_out_ones() -> None:
    held = [t for ts in strings.TEMPLATES.values() for t in split_templates(ts)["test"]]
    for op, extra in strings.extra_phrasings().items():
        assert len(extra) >= 100, op
        assert all(word_distance(t, h) >= strings.MIN_DISTANCE for t in extra for h in held)
    assert (
        word_distance('Give the last {k} letters of "{s}".', 'Give the final {k} letters of "{s}".')
        == 1
    )
    assert expand("<v> it<x>.", v=["Do", "Say"], x=["", " now"]) == [
        "Do it.",
        "Do it now.",
        "Say it.",
        "Say it now.",
    ]
