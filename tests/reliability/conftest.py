"""What the reliability tests share: a tiny pretraining run with two checkpoints (copied before
a test damages it), a digest of a folder (to show nothing changed on disk), and the CLI run in
a fresh process (for tests that need two processes or a planted payload)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmlab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def pretrain_argv(corpus: Path, out: Path, steps: int = 4, *extra: str) -> list[str]:
    """`lmlab pretrain` of a 1-layer, 32-wide char model: a checkpoint every 2 steps."""
    return [
        "pretrain",
        "--corpus",
        str(corpus),
        "--tokenizer",
        "char",
        "--model.n-layer",
        "1",
        "--model.d-model",
        "32",
        "--model.context-length",
        "32",
        "--train.batch-size",
        "2",
        "--train.eval-iters",
        "1",
        "--train.eval-every",
        "2",
        "--train.log-every",
        "1",
        "--train.warmup-steps",
        "1",
        "--train.max-steps",
        str(steps),
        "--quiet",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="session")
def trained_run(corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step pretraining run with checkpoints at steps 2 and 4 (model, optimizer,
    RNG, state, manifest). Never modified: tests work on `copy_run`."""
    out = tmp_path_factory.mktemp("reliability") / "run"
    assert main(pretrain_argv(corpus_file, out)) == 0
    return out


def copy_run(run: Path, tmp_path: Path, name: str = "run") -> Path:
    dest = tmp_path / name
    shutil.copytree(run, dest)
    return dest


def digest(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path -> SHA-256): equal digests, nothing changed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def lmlab(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`lmlab ARGV` in a fresh Python process (this checkout's sources first on the path)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "lmlab", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a process that failed as a user error should (exit 2): the
    last line of its stderr (progress printed before it aside), with no traceback."""
    return _last_error_line(proc.returncode, proc.stderr)


def error_after_progress(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """`tests.conftest.user_error` for a command that prints progress before it fails."""
    capsys.readouterr()
    code = main(argv)
    return _last_error_line(code, capsys.readouterr().err)


def _last_error_line(code: int, stderr: str) -> str:
    err = stderr.strip()
    assert code == 2, (code, err[-3000:])
    lines = err.splitlines()
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err[-3000:]
    assert sum(line.startswith("error") for line in lines) == 1, err[-3000:]
    return lines[-1]
