"""`lmlab pretrain --resume`: every flag defaults to the run's own setting, so a given
--train.max-steps (any value, the preset's default too) moves the target and an absent one
keeps the run's."""

from __future__ import annotations

from pathlib import Path

from lmlab.commands.pretrain import parse_args
from lmlab.config import RunConfig, TrainConfig, preset


def test_resume_defaults_are_the_runs_own(tmp_path: Path) -> None:
    RunConfig(train=TrainConfig(max_steps=7)).save(tmp_path / "config.json")
    preset_steps = preset("tiny").train.max_steps
    assert preset_steps != 7
    assert parse_args(["--resume", str(tmp_path)]).train.max_steps == 7
    given = ["--resume", str(tmp_path), "--train.max-steps", str(preset_steps)]
    assert parse_args(given).train.max_steps == preset_steps
    assert parse_args(["--train.max-steps", "9"]).train.max_steps == 9
    assert parse_args([]).train.max_steps == preset_steps
