"""`lmlab --help` and every `lmlab COMMAND --help` against committed snapshots.

The command line is an interface: a refactor must not change what a user reads in `--help`
by accident. After a deliberate change (a renamed or new flag), regenerate the snapshots with
`LMLAB_UPDATE_SNAPSHOTS=1 pytest tests/test_help_snapshot.py` and list the rename in the README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from lmlab.cli import COMMANDS, main

SNAPSHOTS = Path(__file__).parent / "snapshots" / "help"
VERBS = {
    "world": ["sample"],
    "scaling": ["plan", "run", "fit", "predict"],
    "rlhf": ["overopt"],
}
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Box-drawing and rule characters and line breaks are layout (they move with the terminal width
# and the tyro version), not content: the comparison ignores them.
LAYOUT = re.compile(r"[\u2500-\u257f]+|-{3,}|\s+")


def _invocations() -> list[list[str]]:
    out: list[list[str]] = [[]]
    for name in COMMANDS:
        out.append([name])
        out += [[name, verb] for verb in VERBS.get(name, [])]
    return out


def _help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        code = main([*argv, "--help"])
        raise SystemExit(code)
    assert exit_info.value.code in (0, None)
    text = ANSI.sub("", capsys.readouterr().out)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip() + "\n"


@pytest.mark.parametrize("argv", _invocations(), ids=lambda a: "-".join(a) or "lmlab")
def test_help_matches_snapshot(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TERM", "dumb")
    text = _help_text(argv, capsys)
    path = SNAPSHOTS / f"{'-'.join(argv) or 'lmlab'}.txt"
    if os.environ.get("LMLAB_UPDATE_SNAPSHOTS"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no snapshot {path}; run with LMLAB_UPDATE_SNAPSHOTS=1"
    assert _content(text) == _content(path.read_text()), f"`lmlab {' '.join(argv)} --help` changed"


def _content(text: str) -> str:
    return LAYOUT.sub(" ", text).strip()
