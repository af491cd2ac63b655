"""Tests for lmlab.data.label: a label survives a kill, and a session resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from lmlab.data.prefs import read_prefs

ROOT = Path(__file__).resolve().parents[2]


def _start(run: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmlab",
            "label",
            str(run),
            "--out",
            str(out),
            "--n",
            "3",
            "--tasks",
            "arith:1",
            "--max-new-tokens",
            "12",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_label_survives_kill_and_resumes(chat_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    proc = _start(chat_run, out)
    assert proc.stdin is not None
    proc.stdin.write("a\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 120
    while not (out.exists() and out.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no label written"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = read_prefs(out)
    assert len(first) == 1 and first[0].meta["source"] == "human"

    proc = _start(chat_run, out)
    _, err = proc.communicate("b\nb\nb\n", timeout=300)
    assert proc.returncode == 0, err
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0] == json.loads(out.read_text().splitlines()[0])
    assert len({r["id"] for r in rows}) == len(rows) >= 2  # the first prompt was not asked again
    assert len(read_prefs(out)) == len(rows)
