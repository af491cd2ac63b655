"""Flags generated from the classes that declare the settings, so no command repeats them: the
world's knobs (each family's `Knob`s) and the reasoning strategies' settings (the fields of the
strategy dataclasses, with their docstrings).

Each generated flag is optional (default None: not given, so the family's or strategy's own
default applies) and its help text is assembled from the declarations.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import tyro

from lmlab.data.world import catalog


@dataclass(frozen=True)
class Flag:
    """One generated flag: `--name` of `type`, optional."""

    name: str
    type: type
    help: str
    aliases: tuple[str, ...] = ()


def optional_flags(cls_name: str, doc: str, flags: Iterable[Flag]) -> type:
    """A dataclass with one `T | None = None` field per flag, for nesting into a command's
    arguments with `tyro.conf.arg(name="")` (its flags then sit among the command's own)."""
    specs = []
    for f in flags:
        arg = tyro.conf.arg(help=f.help, aliases=f.aliases or None)
        specs.append((f.name, Annotated[f.type | None, arg], field(default=None)))
    cls = dataclasses.make_dataclass(cls_name, specs)
    cls.__doc__ = doc
    return cls


def knob_flags(cls_name: str, names: Sequence[str] | None = None) -> type:
    """Flags for the world knobs called `names` (default: every knob of every family)."""
    chosen = list(catalog.knobs()) if names is None else list(names)
    return optional_flags(
        cls_name,
        "World knobs (each sets that knob of the task spec).",
        (Flag(n, catalog.knob_type(n), catalog.knob_help(n)) for n in chosen),
    )


def strategy_flags(
    cls_name: str,
    strategies: Mapping[str, type],
    exclude: Collection[str],
    aliases: Mapping[str, tuple[str, ...]] | None = None,
) -> type:
    """Flags for every setting of every strategy dataclass in `strategies` (name -> class)
    except `exclude` (settings the command supplies itself), in the order they are declared."""
    settings: dict[str, list[tuple[str, type, Any, str]]] = {}
    for sname, cls in strategies.items():
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            if f.name not in exclude:
                entry = (sname, _strip_none(hints[f.name]), _default(f), docs.get(f.name, ""))
                settings.setdefault(f.name, []).append(entry)
    flags = []
    for name, entries in settings.items():
        kinds = {t for _, t, _, _ in entries}
        if len(kinds) != 1:
            raise TypeError(f"strategy setting {name!r} has several types: {kinds}")
        help_ = _setting_help(entries, every=len(entries) == len(strategies))
        flags.append(Flag(name, kinds.pop(), help_, (aliases or {}).get(name, ())))
    return optional_flags(cls_name, "Reasoning-strategy settings.", flags)


def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a dataclass's fields (its own and its bases'; a field
    redeclared without one keeps its base's), whitespace collapsed."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):  # builtins and classes made at run time have no source
            continue
        node = ast.parse(source).body[0]
        if not isinstance(node, ast.ClassDef):
            continue
        for stmt, nxt in itertools.pairwise(node.body):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def _strip_none(hint: Any) -> type:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _setting_help(entries: list[tuple[str, type, Any, str]], every: bool) -> str:
    """What each strategy's docstring says the setting is, then the strategies' defaults:
    `sc: Chains sampled per question. tot: Thoughts .... Default: 8 (sc, adaptive), 3 (tot).`"""
    by_doc: dict[str, list[str]] = {}
    for sname, _, _, doc in entries:
        by_doc.setdefault(doc, []).append(sname)
    undocumented = by_doc.pop("", [])
    if every and len(by_doc) == 1 and not undocumented:
        parts = [_sentence(next(iter(by_doc)))]
    else:
        parts = [f"{', '.join(names)}: {_sentence(doc)}" for doc, names in by_doc.items()]
    if undocumented:
        parts.append(f"{'Also used' if parts else 'Used'} by {', '.join(undocumented)}.")
    by_default: dict[str, list[str]] = {}
    for sname, _, default, _ in entries:
        if default is not None:
            by_default.setdefault(str(default), []).append(sname)
    if len(by_default) == 1 and len(next(iter(by_default.values()))) == len(entries):
        parts.append(f"Default: {next(iter(by_default))}.")
    elif by_default:
        listed = ", ".join(f"{v} ({', '.join(names)})" for v, names in by_default.items())
        parts.append(f"Default: {listed}.")
    return " ".join(parts)


def _sentence(doc: str) -> str:
    return doc if doc.endswith(".") else doc + "."
