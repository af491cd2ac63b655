"""`lmlab/cli.py` stays a table: every command resolves to a module under `lmlab/commands/`
with `run(argv)`, every such module is in the table, the files stay small, and `lmlab --help`
imports no command (nor torch)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import lmlab.commands
from lmlab.cli import COMMANDS, command_module, main
from tests.conftest import user_error

SRC = Path(lmlab.commands.__file__).parent
SHARED = {"__init__", "args", "common", "config_file", "flags"}  # helpers, not commands


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_resolves_to_a_module_with_run(name: str) -> None:
    module = importlib.import_module(command_module(name))
    assert module.__name__.startswith("lmlab.commands.")
    assert callable(module.run)
    assert module.__doc__, f"{module.__name__} has no docstring"


def test_every_command_module_is_in_the_table() -> None:
    modules = {p.stem for p in SRC.glob("*.py")} - SHARED
    assert modules == {module for module, _ in COMMANDS.values()}


def test_cli_is_a_table_and_commands_stay_small() -> None:
    assert len((SRC.parent / "cli.py").read_text().splitlines()) < 150
    for path in SRC.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 350, path.name


def test_help_imports_no_command() -> None:
    code = (
        "import json, sys\n"
        "from lmlab.cli import main\n"
        "assert main(['--help']) == 0\n"
        "names = [m for m in sys.modules if m.startswith('lmlab.') or m == 'torch']\n"
        "print(json.dumps(sorted(names)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == ["lmlab.cli"]


def test_user_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown preset" in user_error(capsys, ["info", "--preset", "huge"])
    assert main([]) == 2  # no command: the usage, and a non-zero exit
    assert "usage: lmlab COMMAND" in capsys.readouterr().out
