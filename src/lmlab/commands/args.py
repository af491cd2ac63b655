"""Flags into a command's arguments, and the checks every flag of every command gets.

`parse(cls, argv, prog)` is how each command reads its flags (tyro turns the argument dataclass
into `--group.field value` flags). Whatever the parser rejects (an unknown or misspelt flag, a
value of the wrong type, an unknown choice, a missing required argument) tyro reports in a
multi-line box; here it becomes one `UsageError` line that keeps the box's message and its
suggestion ("perhaps you meant --train.max-steps"). Then, before any command does any work:

- every float flag must be a finite number: NaN fails every comparison, so a range check such
  as `lr <= 0` lets it through and it poisons whatever it touches; infinity is no setting of
  any flag here either;
- no integer flag may be negative, except seeds;
- an output path (`--out`, `--plot`, `--png`) must not lie under a plain file (its folders
  could never be made: failing there after the work would lose the work);
- every settings group the command takes (model, train, sft, ppo, serve, ...) runs its own
  `validate()`, and its sizes are checked against `lmlab.bounds` (`GROUP_CHECKS`).

A command checks its own size-like flags (samples, slots, problems) against `lmlab.bounds`
itself, before it loads anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tyro

from lmlab.bounds import (
    MAX_BATCH_SIZE,
    MAX_BATCHES,
    MAX_LAYERS,
    MAX_NEW_TOKENS,
    MAX_PROBLEMS,
    MAX_SAMPLES,
    MAX_VOCAB,
    MAX_WIDTH,
    check_count,
    check_number,
)
from lmlab.commands import config_file
from lmlab.config import GRPOConfig, ModelConfig, PPOConfig, SFTConfig, TrainConfig
from lmlab.experiments.config import LadderConfig
from lmlab.scaling.config import PlanConfig

T = TypeVar("T")

OUTPUTS = ("out", "plot", "png")
"""Fields that name a path a command writes."""


class UsageError(ValueError):
    """A flag the parser rejects or a value no setting takes (one line, like every user
    error)."""


def parse(cls: type[T], argv: Sequence[str], prog: str, default: T | None = None) -> T:
    """`argv` parsed by tyro into `cls` (every flag defaulting to `default`'s value if given;
    `--config FILE` adds the file's settings as flags before argv's own, see
    `lmlab.commands.config_file`), then checked (see the module docstring). `--help` prints and
    exits as usual."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = config_file.parse(cls, argv, prog, default)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise UsageError(tyro_message(err.getvalue(), prog)) from None
    sys.stderr.write(err.getvalue())  # anything else tyro printed (warnings) goes through
    check_args(args)
    return args


# --- tyro's error box as one line ---------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SIDE = re.compile(r"^\s*[\u2502|]|[\u2502|]\s*$")
_RULE = re.compile(r"^[-\u2500-\u257f]+$")
_EDGE = re.compile(r"^[-\u2500-\u257f\s]+|[-\u2500-\u257f\s]+$")


def tyro_message(text: str, prog: str) -> str:
    """tyro's error box as one line: its message, what it suggests, where the help is.

    The box is a title, then sections between rules: the message, "Perhaps you meant:" or
    "Missing from PROG:" with one indented entry per flag (its help text indented further),
    "Argument helptext:" and "For full helptext, ..." (both dropped for a pointer to --help)."""
    title, sections = "", [[]]
    for raw in _ANSI.sub("", text).splitlines():
        line = _SIDE.sub("", raw).rstrip()  # the box's sides, if drawn
        body = line.strip()
        if not body:
            continue
        if not title:
            title = _EDGE.sub("", body)
        elif _RULE.match(body):
            sections.append([])
        else:
            sections[-1].append((len(line) - len(line.lstrip()), body))
    message, hints = title or "bad arguments", []
    for section in filter(None, sections):
        head, entries = section[0][1], section[1:]
        # an entry is a flag with its metavar; its help text is indented further
        named = [line for indent, line in entries if indent == entries[0][0]] if entries else []
        if head.startswith("Perhaps you meant") and named:
            hints.append(f"perhaps you meant {' or '.join(x.split()[0] for x in named)}")
        elif head.startswith("Missing from") and named:
            message = "missing " + ", ".join(named)
        elif not head.startswith(("For full helptext", "Argument helptext")):
            message = " ".join(line for _, line in section)
    message = re.sub(r"^Error parsing ", "cannot parse ", message)
    if message[:2].istitle():
        message = message[0].lower() + message[1:]
    return "; ".join([message, *hints]) + f" (see {prog} --help)"


# --- the checks every flag gets -----------------------------------------------------------------


@dataclass(frozen=True)
class FlagField:
    """A field of a command's arguments as the flag tyro makes of it."""

    flag: str
    """`--train.log-every`; a positional argument by its field name."""
    path: tuple[str, ...]
    """Attribute path from the arguments object: ("train", "log_every")."""
    type: Any
    """The field's type, with `| None` removed."""
    prefix: str = ""
    """A group's (nested dataclass's) prefix of its own flags: `--train.`, or `--` if flat."""


def flag_fields(cls: type, prefix: str = "--", path: tuple[str, ...] = ()) -> Iterator[FlagField]:
    """Every leaf field of the argument dataclass `cls` and its flag: a nested dataclass is a
    `name.` group unless declared with `tyro.conf.arg(name="")`; underscores become dashes.
    Nested dataclasses come out too (as `FlagField`s whose type is a dataclass), before their
    fields."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint, meta = hints[f.name], ()
        if typing.get_origin(hint) is typing.Annotated:
            hint, *rest = typing.get_args(hint)
            meta = tuple(rest)
        hint = _strip_none(hint)
        name = f.name.replace("_", "-")
        positional = any(m is tyro.conf.Positional for m in meta)
        flag = name if positional else prefix + name
        if not dataclasses.is_dataclass(hint):
            yield FlagField(flag, (*path, f.name), hint)
            continue
        flat = any(getattr(m, "name", None) == "" for m in meta)
        inner = prefix if flat else f"{prefix}{name}."
        yield FlagField(flag, (*path, f.name), hint, inner)
        yield from flag_fields(hint, inner, (*path, f.name))  # type: ignore[arg-type]


def check_args(args: object) -> None:
    """The checks every command's arguments get (see the module docstring), in flag order:
    a flag's own check names the flag; a group's `validate()` follows its flags."""
    fields = list(flag_fields(type(args)))
    for f in fields:
        value = _value(args, f.path)
        if dataclasses.is_dataclass(f.type) or value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{f.flag} must be a finite number, got {value}")
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value < 0
            and not f.path[-1].endswith("seed")
        ):
            raise UsageError(f"{f.flag} must be >= 0, got {value}")
        if isinstance(value, Path) and f.path[-1] in OUTPUTS:
            blocked = next((p for p in value.parents if p.exists() and not p.is_dir()), None)
            if blocked is not None:
                raise UsageError(f"{f.flag} {value}: {blocked} is a file, not a folder")
    for f in fields:
        group = _value(args, f.path)
        if not dataclasses.is_dataclass(f.type) or group is None:
            continue
        check = GROUP_CHECKS.get(type(group))
        if check is not None:
            check(group, f.prefix)
        validate = getattr(group, "validate", None)
        if callable(validate) and not _required_params(validate):
            validate()


def _check_train(cfg: TrainConfig, at: str) -> None:
    """The loop's sizes (`TrainConfig.validate` checks they are positive) and how often it logs
    (the loop divides by it)."""
    check_count(f"{at}batch-size", cfg.batch_size, MAX_BATCH_SIZE)
    check_count(f"{at}grad-accum", cfg.grad_accum, MAX_BATCHES)
    check_count(f"{at}eval-iters", cfg.eval_iters, MAX_BATCHES)
    check_count(f"{at}log-every", cfg.log_every, sys.maxsize)


def _check_model(cfg: ModelConfig, at: str) -> None:
    """The model's dimensions and the weights' initial standard deviation (normal init needs it
    positive)."""
    check_count(f"{at}vocab-size", cfg.vocab_size, MAX_VOCAB)
    for name in ("d_model", "d_ff"):
        if getattr(cfg, name) is not None:
            check_count(at + name.replace("_", "-"), getattr(cfg, name), MAX_WIDTH)
    for name in ("n_layer", "n_head", "n_kv_head"):
        if getattr(cfg, name) is not None:
            check_count(at + name.replace("_", "-"), getattr(cfg, name), MAX_LAYERS)
    check_count(f"{at}moe.n-experts", cfg.moe.n_experts, MAX_LAYERS, low=0)
    if cfg.moe.d_expert is not None:
        check_count(f"{at}moe.d-expert", cfg.moe.d_expert, MAX_WIDTH)
    if not check_number(f"{at}init-std", cfg.init_std) > 0:
        raise UsageError(f"{at}init-std must be > 0, got {cfg.init_std}")


def _check_sft(cfg: SFTConfig, at: str) -> None:
    check_count(f"{at}n-world", cfg.n_world, MAX_PROBLEMS, low=2)


def _check_grpo(cfg: GRPOConfig, at: str) -> None:
    check_count(f"{at}k", cfg.k, MAX_SAMPLES, low=2)
    check_count(f"{at}prompts-per-step", cfg.prompts_per_step, MAX_PROBLEMS)
    check_count(f"{at}eval-n", cfg.eval_n, MAX_PROBLEMS)
    check_count(f"{at}max-new-tokens", cfg.max_new_tokens, MAX_NEW_TOKENS)


def _check_ppo(cfg: PPOConfig, at: str) -> None:
    check_count(f"{at}prompts-per-iter", cfg.prompts_per_iter, MAX_PROBLEMS)
    check_count(f"{at}minibatch", cfg.minibatch, MAX_BATCH_SIZE)
    check_count(f"{at}max-new-tokens", cfg.max_new_tokens, MAX_NEW_TOKENS)


def _check_ladder(cfg: LadderConfig, at: str) -> None:
    check_count(f"{at}n", cfg.n, MAX_PROBLEMS)
    check_count(f"{at}n-world", cfg.n_world, MAX_PROBLEMS, low=2)


def _check_plan(cfg: PlanConfig, at: str) -> None:
    check_count(f"{at}batch-size", cfg.batch_size, MAX_BATCH_SIZE)
    check_count(f"{at}eval-iters", cfg.eval_iters, MAX_BATCHES)
    check_count(f"{at}vocab-size", cfg.vocab_size, MAX_VOCAB)


GROUP_CHECKS: dict[type, Callable[[Any, str], None]] = {
    TrainConfig: _check_train,
    ModelConfig: _check_model,
    SFTConfig: _check_sft,
    GRPOConfig: _check_grpo,
    PPOConfig: _check_ppo,
    LadderConfig: _check_ladder,
    PlanConfig: _check_plan,
}
"""Checks of a settings group beyond its own `validate()`, by its class."""


def _value(args: object, path: tuple[str, ...]) -> Any:
    for name in path:
        if args is None:
            return None
        args = getattr(args, name)
    return args


def _strip_none(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _required_params(fn: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
