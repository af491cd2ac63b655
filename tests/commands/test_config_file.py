"""`--config FILE`: every command reads its flags' values from YAML or JSON, named as the flags
(nested or dotted), with the command line's flags winning; a bad file is one clear line."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import tyro

from lmlab.cli import COMMANDS, command_module, main
from lmlab.commands import config_file
from lmlab.commands.config_file import ConfigFileError, parse, settings, with_config_flag
from lmlab.commands.generate import GenerateArgs
from lmlab.commands.pretrain import parse_args
from lmlab.commands.sft import SFTArgs
from lmlab.config import preset
from tests.conftest import user_error


def _file(tmp_path: Path, data: Any, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _argument_classes() -> list[type]:
    """The argument dataclass of every command (and of every verb)."""
    found = []
    for name in COMMANDS:
        module = importlib.import_module(command_module(name))
        found += [
            v
            for k, v in vars(module).items()
            if k.endswith("Args")
            and dataclasses.is_dataclass(v)
            and v.__module__ == module.__name__
        ]
    return found


@pytest.mark.parametrize("cls", _argument_classes(), ids=lambda c: c.__name__)
def test_every_setting_name_is_a_flag_of_the_command(
    cls: type, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The names a file may use are the flags tyro makes (checked against `--help`), and
    every command lists --config FILE."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        tyro.cli(with_config_flag(cls), args=["--help"])
    text = capsys.readouterr().out
    assert "--config FILE" in text
    flags = {s.flag for s in settings(cls).values() if not s.positional}
    for flag in flags:
        assert f"--{flag} " in text or f"--{flag}," in text, flag
        if settings(cls)[flag].boolean:
            group, _, name = flag.rpartition(".")
            assert f"--{group}{'.' if group else ''}no-{name}" in text


def test_nested_dotted_and_field_path_names(tmp_path: Path) -> None:
    cfg = _file(
        tmp_path,
        "train:\n  lr: 0.001\n  max_steps: 7\n  compile: false\n"
        "train.batch-size: 3\nsft.n_world: 5\nquiet: true\nout: null\n"
        "tasks: [arith, chain]\n",  # a list last: it must not swallow RUN
    )
    args = parse(SFTArgs, ["--config", str(cfg), "base"], "lmlab sft")
    assert isinstance(args, SFTArgs) and not hasattr(args, "config")
    assert args.run == Path("base")
    assert (args.train.lr, args.train.max_steps, args.train.batch_size) == (0.001, 7, 3)
    assert args.train.compile is False and args.quiet is True and args.out is None
    assert (args.sft.n_world, args.sft.tasks) == (5, ["arith", "chain"])
    assert args.sft.style == SFTArgs().sft.style  # not in the file: the default


def test_flags_on_the_command_line_override_the_file(tmp_path: Path) -> None:
    cfg = _file(tmp_path, {"train": {"lr": 0.001}, "tasks": ["arith"], "quiet": True}, "c.json")
    for argv in (
        ["base", "--config", str(cfg), "--train.lr", "0.5", "--tasks", "chain", "--no-quiet"],
        ["--train.lr=0.5", "--tasks", "chain", "--no-quiet", f"--config={cfg}", "base"],
    ):
        args = parse(SFTArgs, argv, "lmlab sft")
        assert (args.train.lr, args.sft.tasks, args.quiet) == (0.5, ["chain"], False)
    assert parse(SFTArgs, ["base"], "lmlab sft").train.lr == SFTArgs().train.lr


def test_values_of_every_kind(tmp_path: Path) -> None:
    cfg = _file(
        tmp_path,
        {"top_k": 5, "top-p": 0.5, "stop": ["x", "y"], "prompt": "--z", "json": True, "n": 2},
        "g.json",
    )
    args = parse(GenerateArgs, ["run", "--config", str(cfg)], "lmlab generate")
    assert (args.top_k, args.top_p, args.prompt, args.json, args.n) == (5, 0.5, "--z", True, 2)
    assert args.stop == ["x", "y"]
    none = parse(GenerateArgs, ["run", "--config", str(_file(tmp_path, "top_k: null\n"))], "g")
    assert none.top_k is None


def test_preset_from_the_file_sets_the_defaults(tmp_path: Path) -> None:
    cfg = _file(tmp_path, "preset: small\nmodel:\n  n_layer: 3\n")
    args = parse_args(["--config", str(cfg)])
    small = preset("small")
    assert args.preset == "small" and args.model.d_model == small.model.d_model
    assert args.model.n_layer == 3 != small.model.n_layer
    assert args.train.max_steps == small.train.max_steps
    given = parse_args(["--config", str(cfg), "--preset", "tiny"])
    assert given.preset == "tiny" and given.model.d_model == preset("tiny").model.d_model


def test_a_runs_config_json_is_a_config_file(tmp_path: Path) -> None:
    """config.json names settings by field path (data.corpus for the flag --corpus)."""
    run_cfg = preset("tiny")
    run_cfg.train.max_steps = 11
    run_cfg.save(tmp_path / "config.json")
    args = parse_args(["--config", str(tmp_path / "config.json")])
    assert (args.model, args.train, args.data) == (run_cfg.model, run_cfg.train, run_cfg.data)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.yaml", "train:\n  lrr: 1\n", r"c\.yaml: unknown setting 'train\.lrr' for lmlab sft"),
        ("c.yaml", "train:\n  lrr: 1\n", r"\(did you mean 'train\.lr'\?\)$"),
        ("c.yaml", "nope: 1\n", r"unknown setting 'nope' for lmlab sft$"),
        ("c.yaml", "run: x\n", r"'run' is a positional argument of lmlab sft"),
        ("c.yaml", "quiet: 3\n", r"'quiet' takes true or false, got 3"),
        ("c.yaml", "tasks: [[a]]\n", r"'tasks' has a list value"),
        ("c.yaml", "tasks: [a, -b]\n", r"'tasks' has an item starting with '-' \('-b'\)"),
        ("c.yaml", "train.lr: 1\ntrain:\n  lr: 2\n", r"setting 'train\.lr' is given twice"),
        ("c.yaml", "train.lr: 1\ntrain_lr: 2\n", r"unknown setting 'train_lr'"),
        ("c.yaml", "data: a\nsft:\n  data: b\n", r"'data' and 'sft\.data' both set --data"),
        ("c.yaml", "train.max_steps: 1\ntrain.max-steps: 2\n", r"both set --train\.max-steps"),
        ("c.yaml", "train:\n  lr: 1\n   bad: [\n", r"c\.yaml:3: malformed YAML"),
        ("c.yaml", "- a\n- b\n", r"expected a mapping of settings \(name: value\), got list"),
        ("c.json", '{"train": {\n"lr": 1,\n}}', r"c\.json:3: malformed JSON"),
        ("c.yaml", "1: 2\n", r"setting names must be non-empty strings, got 1"),
    ],
)
def test_a_bad_file_is_one_line_naming_it(
    name: str, content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _file(tmp_path, content, name)
    with pytest.raises(ConfigFileError, match=message):
        parse(SFTArgs, ["base", "--config", str(cfg)], "lmlab sft")
    err = user_error(capsys, ["sft", "base", "--config", str(cfg)])
    assert str(cfg) in err


def test_config_flag_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "does not exist" in user_error(capsys, ["sft", "--config", str(tmp_path / "no.yaml")])
    assert "needs a FILE" in user_error(capsys, ["sft", "--config"])
    cfg = str(_file(tmp_path, "quiet: true\n"))
    assert "give --config once" in user_error(capsys, ["sft", "--config", cfg, "--config", cfg])


def test_a_config_file_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A verb's flags from a file, end to end: `lmlab world sample --config FILE`."""
    cfg = _file(tmp_path, "task: chain\nn: 2\njson: true\nseed: 4\n")
    assert main(["world", "sample", "--config", str(cfg), "--n", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 1 and rows[0]["task"] == "chain"


def test_every_command_parses_through_config_file() -> None:
    """A command that called tyro.cli itself would not take --config."""
    for path in Path(config_file.__file__).parent.glob("*.py"):
        if path.name != "config_file.py":
            assert "tyro.cli(" not in path.read_text(), path.name
