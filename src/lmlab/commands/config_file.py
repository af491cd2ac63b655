"""`--config FILE`, taken by every command: its flags' values from a YAML or JSON file.

The file names settings exactly as the flags do, nested (`{"train": {"lr": 0.001}}`) or dotted
(`{"train.lr": 0.001}`), with `-` or `_` between words; a group flattened into the command's
own flags (`lmlab sft --data`) may also be named by its field path (`sft.data`), so a run's
`config.json` or a stage's settings can be given as they are. The file's settings are turned
into flags placed before the command line's own, so a flag given on the command line wins
(the last value of a flag is the one tyro keeps). An unknown setting, a malformed file or a
value of the wrong shape is one line naming the file (and the line, for a syntax error).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import tyro
import yaml

T = TypeVar("T")

FLAG = "--config"
HELP = (
    "Settings from a YAML or JSON file, named as the flags are (train.lr: 0.001, or nested "
    "train: {lr: 0.001}); flags given on the command line override them."
)
_ARG_CONFIG = type(tyro.conf.arg())


class ConfigFileError(ValueError):
    """A config file that cannot be used (shown to the user as one line)."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """One flag of a command: its name, as typed after `--`, and whether it is a boolean pair
    (`--quiet` / `--no-quiet`) or a positional argument (not a flag at all)."""

    flag: str
    boolean: bool = False
    positional: bool = False


def _norm(name: str) -> str:
    return name.replace("_", "-")


def _walk(cls: type, flag_prefix: str, path_prefix: str) -> Iterator[tuple[str, str, Setting]]:
    """(flag name, field path, Setting) for every leaf field of the dataclass `cls`, named as
    tyro names them: a nested dataclass is a group `name.`, or no group with `arg(name="")`."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        hint = hints[f.name]
        meta: tuple[Any, ...] = ()
        if typing.get_origin(hint) is Annotated:
            hint, meta = hint.__origin__, hint.__metadata__
        conf = next((m for m in meta if isinstance(m, _ARG_CONFIG)), None)
        name = _norm(conf.name if conf is not None and conf.name is not None else f.name)
        prefix = "" if conf is not None and conf.prefix_name is False else flag_prefix
        path = path_prefix + _norm(f.name)
        if dataclasses.is_dataclass(hint):
            yield from _walk(hint, prefix + (name + "." if name else ""), path + ".")
            continue
        flag = prefix + name
        positional = any(m is tyro.conf.Positional for m in meta)
        yield flag, path, Setting(flag, hint is bool, positional)


@functools.cache
def settings(cls: type) -> dict[str, Setting]:
    """The names a config file may use for the flags of the argument dataclass `cls`: each
    flag's own name and, where it differs and is no other flag's name, its field path."""
    by_flag: dict[str, Setting] = {}
    by_path: dict[str, Setting] = {}
    for flag, path, setting in _walk(cls, "", ""):
        by_flag[flag] = setting
        by_path[path] = setting
    return {**{p: s for p, s in by_path.items() if p not in by_flag}, **by_flag}


@functools.cache
def with_config_flag(cls: type[T]) -> type[T]:
    """`cls` with one more field, `config` (the `--config FILE` flag, listed in `--help`)."""
    field = (
        "config",
        Annotated[Path | None, tyro.conf.arg(metavar="FILE", help=HELP)],
        dataclasses.field(default=None),
    )
    namespace = {"__doc__": cls.__doc__, "__module__": cls.__module__}
    return dataclasses.make_dataclass(cls.__name__, [field], bases=(cls,), namespace=namespace)


def config_path(argv: Sequence[str]) -> Path | None:
    """The FILE of `--config FILE` (or `--config=FILE`) in argv, if given."""
    found = [i for i, a in enumerate(argv) if a == FLAG or a.startswith(FLAG + "=")]
    if not found:
        return None
    if len(found) > 1:
        raise ConfigFileError(f"give {FLAG} once (got {len(found)})")
    i = found[0]
    if argv[i] != FLAG:
        return Path(argv[i].split("=", 1)[1])
    if i + 1 == len(argv) or argv[i + 1].startswith("-"):
        raise ConfigFileError(f"{FLAG} needs a FILE (YAML or JSON)")
    return Path(argv[i + 1])


def _without_config(argv: Sequence[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == FLAG:
            skip = True
        elif not a.startswith(FLAG + "="):
            out.append(a)
    return out


def read_settings(path: Path) -> dict[str, Any]:
    """The file's settings as {dotted name: value}, nested mappings flattened."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigFileError(f"cannot read config file {path}: {e}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigFileError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.MarkedYAMLError as e:
            line = f":{e.problem_mark.line + 1}" if e.problem_mark is not None else ""
            problem = " ".join(str(e.problem or e.context or "syntax error").split())
            raise ConfigFileError(f"{path}{line}: malformed YAML ({problem})") from None
        except yaml.YAMLError as e:
            raise ConfigFileError(f"{path}: malformed YAML ({' '.join(str(e).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{path}: expected a mapping of settings (name: value), got {type(data).__name__}"
        )
    flat: dict[str, Any] = {}
    _flatten(data, "", flat, path)
    return flat


def _flatten(data: dict[Any, Any], prefix: str, out: dict[str, Any], path: Path) -> None:
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise ConfigFileError(f"{path}: setting names must be non-empty strings, got {key!r}")
        name = prefix + key
        if isinstance(value, dict):
            _flatten(value, name + ".", out, path)
        elif name in out:
            raise ConfigFileError(f"{path}: setting {name!r} is given twice")
        else:
            out[name] = value


def _text(value: Any, key: str, path: Path) -> str:
    """A scalar as tyro reads it on the command line."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return str(value)
    raise ConfigFileError(
        f"{path}: setting {key!r} has a {type(value).__name__} value; expected a number, a "
        "string, true/false, null or a list of these"
    )


def file_argv(cls: type, path: Path, prog: str) -> list[str]:
    """The settings in `path` as flags of the argument dataclass `cls`."""
    known = settings(cls)
    argv: list[str] = []
    seen: dict[str, str] = {}
    for key, value in read_settings(path).items():
        setting = known.get(_norm(key.removeprefix("--")))
        if setting is None:
            near = difflib.get_close_matches(_norm(key), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigFileError(f"{path}: unknown setting {key!r} for {prog}{hint}")
        if setting.positional:
            raise ConfigFileError(
                f"{path}: {key!r} is a positional argument of {prog}; give it on the command line"
            )
        if setting.flag in seen:
            raise ConfigFileError(
                f"{path}: {seen[setting.flag]!r} and {key!r} both set --{setting.flag}"
            )
        seen[setting.flag] = key
        if setting.boolean:
            if not isinstance(value, bool):
                raise ConfigFileError(f"{path}: setting {key!r} takes true or false, got {value!r}")
            group, _, name = setting.flag.rpartition(".")
            argv.append(f"--{group}{'.' if group else ''}{'' if value else 'no-'}{name}")
        elif isinstance(value, list):
            items = [_text(v, key, path) for v in value]
            dashed = next((v for v in items if v.startswith("-")), None)
            if dashed is not None:  # it would read as a flag (as on the command line)
                raise ConfigFileError(
                    f"{path}: setting {key!r} has an item starting with '-' ({dashed!r}), which "
                    "a list flag cannot carry"
                )
            argv += [f"--{setting.flag}", *items]
        else:
            argv.append(f"--{setting.flag}={_text(value, key, path)}")
    return argv


def parse(cls: type[T], argv: Sequence[str], prog: str, default: T | None = None) -> T:
    """`tyro.cli(cls)` on argv, with `--config FILE`: the file's settings are flags placed
    before argv's own (so argv's win), and `--config=FILE` closes them (a list flag of the file
    must not swallow a positional argument of argv)."""
    path = config_path(argv)
    args = list(argv)
    if path is not None:
        args = [*file_argv(cls, path, prog), f"{FLAG}={path}", *_without_config(argv)]
    wrapped = with_config_flag(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init]
    if default is None:
        parsed = tyro.cli(wrapped, args=args, prog=prog)
    else:
        start = wrapped(**{name: getattr(default, name) for name in fields})
        parsed = tyro.cli(wrapped, args=args, prog=prog, default=start)
    return cls(**{name: getattr(parsed, name) for name in fields})
