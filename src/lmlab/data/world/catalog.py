"""The task world described for people: the families with their knobs (what `lmlab world list`
shows) and each knob's help text (the `--digits`, `--op`, ... flags are generated from it).

Every knob is declared once, on its family (`Family.knobs`); this module only reads them.
"""

from __future__ import annotations

from lmlab.data.world import FAMILIES, Family, Knob


def knob_range(knob: Knob) -> str:
    """`any|add|sub|mul` for a choice knob, `1..12` for an integer one."""
    return "|".join(knob.choices) if knob.choices else f"{knob.lo}..{knob.hi}"


def family_rows() -> list[tuple[str, str, str]]:
    """(task, what it is, its knobs with default and range) for every family."""
    return [
        (
            fam.name,
            fam.doc,
            "; ".join(f"{name}={k.default} ({knob_range(k)})" for name, k in fam.knobs.items()),
        )
        for fam in FAMILIES.values()
    ]


def knobs() -> dict[str, list[tuple[Family, Knob]]]:
    """Every knob name (in family order, first appearance) with the families that have it."""
    out: dict[str, list[tuple[Family, Knob]]] = {}
    for fam in FAMILIES.values():
        for name, knob in fam.knobs.items():
            out.setdefault(name, []).append((fam, knob))
    return out


def knob_type(name: str) -> type:
    """The value type of the knob called `name`: str for choice knobs, else int."""
    return str if any(k.choices for _, k in knobs()[name]) else int


def knob_help(name: str) -> str:
    """One line per family having the knob: what it sets, its range and its default."""
    return (
        "; ".join(
            f"{fam.name}: {knob.doc}, {knob_range(knob)} (default {knob.default})"
            for fam, knob in knobs()[name]
        )
        + "."
    )
