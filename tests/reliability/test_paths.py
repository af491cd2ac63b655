"""Paths read from files stay inside their folder: a `checkpoints/latest`, a sweep plan's run
names and a Hugging Face index's shard names holding `../..`, an absolute path or a symlink out
are refused, and a folder outside (holding keep.txt) survives (issue 23, item 2)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from lmlab.cli import main
from lmlab.model.load import load_run
from lmlab.runs import CheckpointError, latest_checkpoint
from lmlab.scaling.plan import PLAN_FILE
from tests.conftest import plan_tiny_sweep, user_error
from tests.reliability.conftest import copy_run, digest


def _outside(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep me")
    return victim


def _escapes(base: Path, victim: Path) -> dict[str, str]:
    """`../..`-style, absolute and (made here) symlinked names that lead from `base` to
    `victim`."""
    (base / "link").symlink_to(victim, target_is_directory=True)
    return {"relative": os.path.relpath(victim, base), "absolute": str(victim), "symlink": "link"}


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink", "dotted"])
def test_a_latest_pointer_out_of_the_run_is_refused(
    kind: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run, tmp_path)
    victim = _outside(tmp_path)
    shutil.copytree(latest_checkpoint(run), victim / "ckpt")  # it looks like a checkpoint
    root = run / "checkpoints"
    names = _escapes(root, victim)
    names["dotted"] = "step_000004/../../../victim/ckpt"
    (root / "latest").write_text(names[kind] + ("/ckpt" if kind != "dotted" else ""))
    with pytest.raises(CheckpointError, match="refused"):
        latest_checkpoint(run)
    before = digest(run)
    for argv in (
        ["sample", str(run), "--prompt", "def", "--max-new-tokens", "2"],
        ["pretrain", "--resume", str(run), "--train.max-steps", "6", "--quiet"],
    ):
        assert "refused" in user_error(capsys, argv)
    assert digest(run) == before and (victim / "keep.txt").read_text() == "keep me"


def test_a_checkpoint_folder_that_is_a_symlink_out_of_the_run_is_refused(
    trained_run: Path, tmp_path: Path
) -> None:
    run = copy_run(trained_run, tmp_path)
    victim = _outside(tmp_path)
    ckpt = latest_checkpoint(run)
    shutil.move(ckpt, victim / ckpt.name)
    ckpt.symlink_to(victim / ckpt.name, target_is_directory=True)
    with pytest.raises(CheckpointError, match="leads outside"):
        load_run(run)


@pytest.mark.parametrize("kind", ["relative", "absolute", "dotted", "empty"])
def test_sweep_run_names_that_are_paths_are_refused(
    kind: str, corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The name of a run killed before its first checkpoint was rmtree'd and retrained: a
    planted `../../victim` deleted a folder outside the sweep."""
    sweep = tmp_path / "sweep"
    plan_tiny_sweep(corpus_file, sweep)
    victim = _outside(tmp_path)
    names = {
        "relative": os.path.relpath(victim, sweep / "runs"),
        "absolute": str(victim),
        "dotted": "..",
        "empty": "",
    }
    plan = json.loads((sweep / PLAN_FILE).read_text())
    plan["runs"][0]["name"] = names[kind]
    (sweep / PLAN_FILE).write_text(json.dumps(plan))
    before = digest(sweep)
    assert "not paths" in user_error(capsys, ["scaling", "run", str(sweep)])
    assert "not paths" in user_error(capsys, ["scaling", "fit", str(sweep)])
    assert digest(sweep) == before and (victim / "keep.txt").read_text() == "keep me"


def test_a_sweep_run_folder_that_is_a_symlink_out_is_refused(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "sweep"
    plan = plan_tiny_sweep(corpus_file, sweep)
    victim = _outside(tmp_path)
    (sweep / "runs").mkdir()
    (sweep / "runs" / plan["runs"][0]["name"]).symlink_to(victim, target_is_directory=True)
    assert "leads outside" in user_error(capsys, ["scaling", "run", str(sweep)])
    assert (victim / "keep.txt").read_text() == "keep me"


@pytest.mark.parametrize("kind", ["relative", "absolute", "symlink"])
def test_hf_shard_names_out_of_the_folder_are_refused(
    kind: str, trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "hf"
    assert main(["export", str(trained_run), "--out", str(src)]) == 0
    victim = _outside(tmp_path)
    shutil.move(src / "model.safetensors", victim / "outside.safetensors")
    name = _escapes(src, victim)[kind]
    shard = f"{name}/outside.safetensors"
    keys = ["model.embed_tokens.weight", "model.norm.weight"]
    index = {"metadata": {}, "weight_map": dict.fromkeys(keys, shard)}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    capsys.readouterr()
    err = user_error(capsys, ["import", str(src), "--out", str(tmp_path / "imported")])
    assert "leads outside" in err or "not a relative path" in err
    assert not (tmp_path / "imported").exists()
    assert (victim / "keep.txt").read_text() == "keep me"
