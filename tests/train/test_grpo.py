"""Tests for lmlab.train.grpo."""

from __future__ import annotations

import torch

from lmlab.train.grpo import group_advantages


def test_group_advantages_zero_mean_per_group() -> None:
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    a = group_advantages(r)
    torch.testing.assert_close(a.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert torch.count_nonzero(a[2]) == 0  # a group that ties teaches nothing
