"""The fuzz script (`tests/reliability/fuzz.py`) over every command and the server: no input may
give a traceback, be accepted silently or change a file. Slow (a few minutes on 2 CPU cores):
marked `slow`, run in CI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).with_name("fuzz.py")


@pytest.mark.slow
def test_fuzz_finds_no_traceback_no_silent_accept_no_changed_file(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(FUZZ), "--seed", "0", "--per-group", "2", "--verbose"],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    found = proc.stderr[-8000:]  # what the verbose run says about each case that failed
    assert result["tried"] >= 200, result
    assert result["tracebacks"] == 0, found
    assert result["silent_accepts"] == 0, found
    assert result["files_changed"] == 0, found
    assert result["unclear"] == 0, found
    assert result["clear_errors"] == result["tried"], result
