"""Tests for lmlab.train.dpo."""

from __future__ import annotations

import math

import torch

from lmlab.train.dpo import dpo_loss


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
