"""Tests for lmlab.train.checkpoint: atomic writes survive a kill mid-write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmlab.model.transformer import Transformer
from lmlab.runs import CheckpointError, latest_checkpoint
from lmlab.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import tiny_model_config

ROOT = Path(__file__).resolve().parents[2]

CRASH_SCRIPT = """
import os, signal, sys
from pathlib import Path
import torch
import lmlab.train.checkpoint as C
import lmlab.runs as R
from lmlab.model.transformer import Transformer
from tests.conftest import tiny_model_config

run = Path(sys.argv[1])
torch.manual_seed(0)
model = Transformer(tiny_model_config())
opt = torch.optim.AdamW(model.parameters())
C.save_checkpoint(run, model, opt, {"step": 1, "tokens": 10})
torch.save(model.state_dict(), run / "expected.pt")

def crash_midway(tensors, path):  # write half a weights file, then die like a power cut
    with open(path, "wb") as f:
        f.write(b"\\x00" * 1000)
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)

with torch.no_grad():
    for p in model.parameters():
        p.add_(1.0)
R.save_file = crash_midway
C.save_checkpoint(run, model, opt, {"step": 2, "tokens": 20})
"""


def test_kill_while_writing_leaves_previous_checkpoint(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -9, proc.stderr
    path = latest_checkpoint(tmp_path)
    assert path.name == "step_000001"
    model = Transformer(tiny_model_config())
    state = load_checkpoint(path, model)
    assert state == {"step": 1, "tokens": 10}
    expected = torch.load(tmp_path / "expected.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k])
    # the next successful save cleans up the partial directory
    save_checkpoint(tmp_path, model, None, {"step": 3, "tokens": 30})
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_keep_and_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        latest_checkpoint(tmp_path)
    model = Transformer(tiny_model_config())
    for step in range(1, 5):
        save_checkpoint(tmp_path, model, None, {"step": step, "tokens": 0}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert names == ["step_000003", "step_000004"]
    other = Transformer(tiny_model_config(d_model=64))
    with pytest.raises(Exception, match=r"size|match"):
        load_checkpoint(latest_checkpoint(tmp_path), other)
