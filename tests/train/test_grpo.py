"""Tests for lmlab.train.grpo."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmlab.config import GRPOConfig, TrainConfig
from lmlab.model.transformer import Transformer
from lmlab.train.grpo import group_advantages, grpo_objective, train_grpo
from tests.conftest import tiny_model_config


def test_group_advantages_zero_mean_per_group() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    a = group_advantages(r)
    torch.testing.assert_close(a.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert torch.count_nonzero(a[2]) == 0  # a group that ties teaches nothing


def test_grpo_driver_smoke(chat_run: Path, tmp_path: Path) -> None:
    cfg = GRPOConfig(task="arith:1", k=2, prompts_per_step=2, max_new_tokens=6, eval_n=4)
    train = TrainConfig(max_steps=2, lr=1e-4, min_lr=1e-5, warmup_steps=1, batch_size=1)
    summary = train_grpo(chat_run, tmp_path / "grpo", train, cfg, show_progress=False)
    assert 0.0 <= summary["grpo_accuracy"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert {"reward", "train_loss", "response_len"} <= rows[0].keys()


def test_grpo_objective_gradient_is_advantage_weighted() -> None:
    """With A = 0 for every response the loss and its gradient vanish."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    ids = torch.randint(0, 128, (2, 6))
    b = {"ids": ids, "mask": torch.ones(2, 5), "adv": torch.zeros(2)}
    loss, _ = grpo_objective(1.0, 0.0)(model, b)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.parameters())
