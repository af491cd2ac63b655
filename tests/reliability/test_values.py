"""Bad values are refused, not silently used: NaN and infinite loop and model settings (which
pass every range check), an unknown device, DPO's beta, and unknown keys in a run's
config.json, each one `error:` line that leaves no folder behind (issue 23, item 14; a
checkpoint file with a zeroed half is refused by its checksum: test_checkpoints.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmlab.config import ConfigError, ModelConfig, MoEConfig, PPOConfig, TrainConfig
from tests.conftest import user_error
from tests.reliability.conftest import copy_run, digest

FLAGS = {
    "--train.lr inf": "--train.lr must be a finite number, got inf",
    "--train.weight-decay nan": "--train.weight-decay must be a finite number",
    "--train.grad-clip nan": "--train.grad-clip must be a finite number",
    "--train.min-lr nan": "--train.min-lr must be a finite number",
    "--model.rope-theta nan": "--model.rope-theta must be a finite number",
    "--model.init-std nan": "--model.init-std must be a finite number",
    "--train.device bogus": "--train.device 'bogus' is not auto, cpu, cuda or cuda:N",
    "--train.grad-clip -1": "grad-clip",
    "--train.beta2 1.5": "beta2",
    "--train.log-every 0": "log",
}


@pytest.mark.parametrize("flag", list(FLAGS))
def test_a_bad_loop_or_model_value_is_refused(
    flag: str, corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["pretrain", "--corpus", str(corpus_file), "--tokenizer", "char", "--out", str(out)]
    assert FLAGS[flag] in user_error(capsys, [*argv, *flag.split()])
    assert not out.exists()


def test_cuda_asked_for_where_there_is_none_is_refused(
    corpus_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv = ["pretrain", "--corpus", str(corpus_file), "--out", str(tmp_path / "run")]
    err = user_error(capsys, [*argv, "--train.device", "cuda"])
    assert "CUDA is not available" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("beta", "message"),
    [
        ("nan", "--beta must be a finite number"),
        ("inf", "--beta must be a finite number"),
        ("0", "beta must be > 0"),
        ("-1", "beta must be > 0"),
    ],
)
def test_dpo_refuses_a_beta_that_is_not_positive(
    beta: str,
    message: str,
    trained_run: Path,
    prefs_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "dpo"
    argv = ["dpo", str(trained_run), "--data", str(prefs_file), "--out", str(out)]
    assert message in user_error(capsys, [*argv, "--beta", beta])
    assert not out.exists()


def test_every_float_setting_of_every_config_is_checked_for_finiteness() -> None:
    for cfg in (
        TrainConfig(decay_frac=float("nan")),
        ModelConfig(norm_eps=float("inf")),
        ModelConfig(moe=MoEConfig(n_experts=4, aux_loss=float("nan"))),
        PPOConfig(temperature=float("nan")),
    ):
        with pytest.raises(ConfigError, match="must be a finite number"):
            cfg.validate()


def test_an_unknown_key_in_a_runs_config_json_is_refused(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_run(trained_run, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["learning_rate"] = 1.0
    (run / "config.json").write_text(json.dumps(cfg))
    before = digest(run)
    for argv in (["info", str(run)], ["pretrain", "--resume", str(run), "--quiet"]):
        assert "unknown TrainConfig setting 'learning_rate'" in user_error(capsys, argv)
    assert digest(run) == before
