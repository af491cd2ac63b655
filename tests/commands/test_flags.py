"""Flags generated from declarations: world knobs from each family's `Knob`s, strategy
settings from the strategy dataclasses' fields and docstrings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import tyro

from lmlab.commands.flags import field_docs, knob_flags, strategy_flags
from lmlab.commands.reason import ReasonArgs
from lmlab.commands.world import WorldSampleArgs
from lmlab.data import world
from lmlab.data.world.catalog import knob_help, knob_type
from lmlab.reason.strategies import STRATEGIES
from tests.conftest import user_error


@dataclass
class _Base:
    budget: int | None = None
    """Most tokens."""


@dataclass
class _Samples(_Base):
    k: int = 8
    """Samples per question."""
    temperature: float = 0.7
    """Sampling temperature."""


@dataclass
class _Tree(_Base):
    budget: int | None = 100
    k: int = 3
    """Thoughts per state."""
    temperature: float = 0.7
    depth: int | None = None


def _helps(cls: type) -> dict[str, str]:
    return {
        f.name: next(m.help for m in f.type.__metadata__ if hasattr(m, "help"))
        for f in dataclasses.fields(cls)
    }


def test_field_docs_reads_docstrings_and_inherits_them() -> None:
    assert field_docs(_Samples) == {
        "budget": "Most tokens.",
        "k": "Samples per question.",
        "temperature": "Sampling temperature.",
    }
    assert field_docs(_Tree) == {"budget": "Most tokens.", "k": "Thoughts per state."}


def test_strategy_flags_compose_docs_and_defaults() -> None:
    flags = strategy_flags("F", {"sc": _Samples, "tot": _Tree}, exclude=("temperature",))
    assert [f.name for f in dataclasses.fields(flags)] == ["budget", "k", "depth"]
    assert _helps(flags) == {
        "budget": "Most tokens. Default: 100 (tot).",
        "k": "sc: Samples per question. tot: Thoughts per state. Default: 8 (sc), 3 (tot).",
        "depth": "Used by tot.",
    }
    args = flags(k=5)
    assert (args.budget, args.k, args.depth) == (None, 5, None)


def test_strategy_flags_refuse_a_setting_with_two_types() -> None:
    @dataclass
    class Other:
        k: float = 0.5

    with pytest.raises(TypeError, match="'k' has several types"):
        strategy_flags("F", {"sc": _Samples, "x": Other}, exclude=())


def test_reason_has_a_flag_for_every_strategy_setting() -> None:
    settings = {f.name for cls in STRATEGIES.values() for f in dataclasses.fields(cls)}
    own = {"task", "seed", "reward_fn", "weighted"}  # the command's own flags, --reward, names
    args = tyro.cli(ReasonArgs, args=["run", "-k", "4", "--max-depth", "6", "--agree", "0.5"])
    assert set(dataclasses.asdict(args.settings)) == settings - own
    assert (args.settings.k, args.settings.max_depth, args.settings.agree) == (4, 6, 0.5)
    assert args.settings.breadth is None  # not given: the strategy keeps its own default


def test_reason_refuses_a_setting_the_strategy_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["reason", "no/such/run", "--strategy", "direct", "--max-depth", "3"]
    assert "strategy direct has no setting --max-depth" in user_error(capsys, argv)


def test_knob_flags_cover_every_knob_of_every_family() -> None:
    knobs = {name for fam in world.FAMILIES.values() for name in fam.knobs}
    args = tyro.cli(WorldSampleArgs, args=["--digits", "2", "--op", "add", "--rule", "affine"])
    assert set(dataclasses.asdict(args.knobs)) == knobs
    assert (args.knobs.digits, args.knobs.op, args.knobs.rule) == (2, "add", "affine")
    assert knob_type("digits") is int and knob_type("op") is str
    assert [f.name for f in dataclasses.fields(knob_flags("K", ["steps"]))] == ["steps"]


def test_knob_help_names_every_family_with_its_range_and_default() -> None:
    arith, strings = world.FAMILIES["arith"], world.FAMILIES["strings"]
    assert knob_help("digits") == (
        f"arith: {arith.knobs['digits'].doc}, 1..12 (default {arith.knobs['digits'].default})."
    )
    op = knob_help("op")
    assert op.startswith(f"arith: {arith.knobs['op'].doc}, any|add|sub|mul (default any); ")
    assert f"strings: {strings.knobs['op'].doc}, {'|'.join(strings.knobs['op'].choices)}" in op


def test_world_sample_knob_flag_reaches_the_spec(capsys: pytest.CaptureFixture[str]) -> None:
    assert "arith: digits must be in 1..12, got 30" in user_error(
        capsys, ["world", "sample", "--task", "arith", "--digits", "30"]
    )
