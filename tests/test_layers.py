"""The packages' layers hold: each imports only from the layers below it (the import-linter
contract in pyproject.toml; `make lint` runs the same check)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_contract_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert os.path.isfile("pyproject.toml")
    assert lint_imports(config_filename="pyproject.toml", no_cache=True, no_logo=True) == 0
