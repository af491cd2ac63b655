"""Tests for lmlab.train.dpo."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmlab.config import TrainConfig
from lmlab.model.load import load_run
from lmlab.train.dpo import dpo_loss, train_dpo
from tests.conftest import TRL_PREFERENCE_FORMATS, trl_preference_row


def test_dpo_loss_is_log2_at_initialisation() -> None:
    lp = torch.randn(8)
    loss, m = dpo_loss(lp, lp - 1.0, lp.clone(), lp - 1.0, beta=0.1)
    assert abs(loss.item() - math.log(2)) < 1e-6
    assert m["reward_margin"] == 0.0


def test_dpo_loss_prefers_chosen() -> None:
    ref = torch.zeros(1)
    good, _ = dpo_loss(torch.tensor([1.0]), torch.tensor([-1.0]), ref, ref, beta=0.5)
    bad, _ = dpo_loss(torch.tensor([-1.0]), torch.tensor([1.0]), ref, ref, beta=0.5)
    assert good.item() == torch.nn.functional.softplus(torch.tensor(-1.0)).item()
    assert good < math.log(2) < bad


def test_dpo_driver_starts_at_log2_and_learns(
    chat_run: Path, prefs_file: Path, tmp_path: Path
) -> None:
    train = TrainConfig(
        max_steps=15, lr=3e-3, min_lr=3e-4, warmup_steps=1, batch_size=8, log_every=1
    )
    train_dpo(chat_run, prefs_file, tmp_path / "dpo", train, beta=0.1, show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert abs(rows[0]["train_loss"] - math.log(2)) < 1e-4  # policy == reference at step 1
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["reward_accuracy"] > 0.5
    load_run(tmp_path / "dpo")  # a normal run directory


@pytest.mark.parametrize("fmt", TRL_PREFERENCE_FORMATS)
def test_dpo_trains_a_step_on_each_trl_format(fmt: str, chat_run: Path, tmp_path: Path) -> None:
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(trl_preference_row(fmt, i)) + "\n" for i in range(4)))
    train = TrainConfig(max_steps=1, batch_size=2, eval_every=1, eval_iters=1, log_every=1)
    train_dpo(chat_run, data, tmp_path / "dpo", train, show_progress=False)
    [row] = [json.loads(x) for x in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    # the reference's log-probs line up with the policy's: the first loss is exactly log 2
    assert abs(row["train_loss"] - math.log(2)) < 1e-4
