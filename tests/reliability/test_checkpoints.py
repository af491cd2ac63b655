"""Checkpoints are data, never code, and damage is found: optimizer and RNG state load with
`weights_only=True` (a planted pickle runs nothing), every file is checked against the SHA-256
in the checkpoint's manifest, damaged files are one `error:` line on resume, and a failed write
(a full disk) is one `error:` line that leaves no temporary folder and the previous checkpoint
intact (issue 23, items 1, 9, 13 and 14)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.cli import main
from lmlab.model.load import load_run
from lmlab.model.transformer import Transformer
from lmlab.runs import MANIFEST_FILE, CheckpointError, latest_checkpoint, rng_state
from lmlab.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import tiny_model_config, user_error
from tests.reliability.conftest import ROOT, copy_run, digest, one_error_line, pretrain_argv


class Payload:
    """Unpickling this runs `touch MARKER` (what an attacker plants in a checkpoint)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _rehash(checkpoint: Path, name: str) -> None:
    """Update the manifest for a replaced file, as an attacker who edits a run would."""
    manifest = json.loads((checkpoint / MANIFEST_FILE).read_text())
    manifest["sha256"][name] = hashlib.sha256((checkpoint / name).read_bytes()).hexdigest()
    (checkpoint / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["optim.pt", "rng.pt"])
def test_a_planted_pickle_runs_nothing_on_resume(
    name: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run, tmp_path)
    marker = tmp_path / "PWNED"
    ckpt = latest_checkpoint(run)
    torch.save({"state": {}, "param_groups": [], "x": Payload(marker)}, ckpt / name)
    _rehash(ckpt, name)
    torch.load(ckpt / name, weights_only=False)  # the payload is live: unpickling runs it
    assert marker.exists()
    marker.unlink()
    before = digest(run)
    err = user_error(capsys, ["pretrain", "--resume", str(run), "--train.max-steps", "6"])
    assert name in err and "cannot be loaded as data" in err
    assert not marker.exists()
    assert digest(run) == before


def test_optimizer_and_rng_state_are_plain_data_and_restore_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):
        model(torch.randint(0, 128, (2, 8))).sum().backward()
        opt.step()
        opt.zero_grad()
    np.random.seed(3)
    random.seed(3)
    path = save_checkpoint(tmp_path, model, opt, {"step": 2, "tokens": 32})
    for name in ("optim.pt", "rng.pt"):  # no allow-list needed: tensors, numbers, containers
        torch.load(path / name, weights_only=True)
    draws = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])

    other = Transformer(tiny_model_config())
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    assert load_checkpoint(path, other, other_opt, restore_rng=True)["step"] == 2
    assert torch.equal(torch.rand(3), draws[0])
    assert np.array_equal(np.random.rand(3), draws[1])
    assert [random.random() for _ in range(3)] == draws[2]
    for p, q in zip(opt.state.values(), other_opt.state.values(), strict=True):
        assert all(torch.equal(p[k], q[k]) for k in ("exp_avg", "exp_avg_sq", "step"))


def test_a_checkpoint_written_before_manifests_and_tensor_rng_state_still_loads(
    tmp_path: Path,
) -> None:
    """Older checkpoints pickled numpy's RNG tuple and had no manifest: they load (numpy's
    array classes are the only ones allowed beyond plain data), unchecked."""
    model = Transformer(tiny_model_config())
    path = save_checkpoint(tmp_path, model, None, {"step": 1, "tokens": 0})
    np.random.seed(5)
    old = dict(rng_state(), numpy=np.random.get_state())
    torch.save(old, path / "rng.pt")
    (path / MANIFEST_FILE).unlink()
    expected = np.random.rand(3)
    np.random.seed(0)
    load_checkpoint(path, Transformer(tiny_model_config()), restore_rng=True)
    assert np.array_equal(np.random.rand(3), expected)


def test_a_zeroed_half_of_the_weights_is_refused_by_its_checksum(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run, tmp_path)
    weights = latest_checkpoint(run) / "model.safetensors"
    data = weights.read_bytes()
    half = len(data) // 2
    weights.write_bytes(data[:half] + bytes(len(data) - half))
    with pytest.raises(CheckpointError, match="checksum"):
        load_run(run)
    err = user_error(capsys, ["sample", str(run), "--prompt", "def", "--max-new-tokens", "2"])
    assert "model.safetensors" in err and "checksum" in err
    # without the manifest the zeroed file would load as valid weights: the checksum refused it
    (weights.parent / MANIFEST_FILE).unlink()
    load_run(run)


DAMAGE = {
    "garbage": lambda data: b"\x80\x02garbage" * 7,
    "truncated": lambda data: data[: len(data) // 3],
    "empty": lambda data: b"",
}


@pytest.mark.parametrize("name", ["model.safetensors", "optim.pt", "rng.pt", "state.json"])
@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("rehash", [False, True], ids=["checksum", "parse"])
def test_a_damaged_checkpoint_file_is_one_error_line_on_resume(
    name: str,
    damage: str,
    rehash: bool,
    trained_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the manifest left alone the checksum finds the damage; with it updated (or
    without one) reading the file does: either way one line, and nothing on disk changes."""
    run = copy_run(trained_run, tmp_path)
    ckpt = latest_checkpoint(run)
    (ckpt / name).write_bytes(DAMAGE[damage]((ckpt / name).read_bytes()))
    if rehash:
        _rehash(ckpt, name)
    before = digest(run)
    err = user_error(capsys, ["pretrain", "--resume", str(run), "--train.max-steps", "6"])
    assert name in err
    assert digest(run) == before


@pytest.mark.parametrize(
    "state", [{"step": "4", "tokens": 0}, {"tokens": 0}, [4], {"step": -1, "tokens": 0}]
)
def test_a_state_json_of_the_wrong_shape_is_refused(
    state: object, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run, tmp_path)
    ckpt = latest_checkpoint(run)
    (ckpt / "state.json").write_text(json.dumps(state))
    _rehash(ckpt, "state.json")
    err = user_error(capsys, ["pretrain", "--resume", str(run), "--train.max-steps", "6"])
    assert "state.json" in err and "integer step and tokens" in err


FULL_DISK = """
import errno, sys
import lmlab.runs as R
from lmlab.cli import main

real, calls = R.save_file, [0]

def full_disk(tensors, path):  # the 2nd checkpoint: half a file written, then ENOSPC
    calls[0] += 1
    if calls[0] == 2:
        with open(path, "wb") as f:
            f.write(b"\\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")
    return real(tensors, path)

R.save_file = full_disk
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_is_one_error_line_and_keeps_the_previous_checkpoint(
    corpus_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, *pretrain_argv(corpus_file, out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    err = one_error_line(proc)
    assert "No space left on device" in err and "previous checkpoint is kept" in err
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert latest_checkpoint(out).name == "step_000002"
    model, _, _ = load_run(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert main(["pretrain", "--resume", str(out), "--quiet"]) == 0  # space again: it goes on
    assert latest_checkpoint(out).name == "step_000004"
