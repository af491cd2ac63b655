"""Tests for lmlab.train.reward."""

from __future__ import annotations

import math

import torch

from lmlab.train.reward import bradley_terry


def test_bradley_terry_toy_case() -> None:
    rc = torch.tensor([2.0, 0.0, -1.0, 0.5])
    rr = torch.tensor([0.0, 0.0, 1.0, 0.0])
    loss, acc = bradley_terry(rc, rr)
    expected = (
        sum(math.log1p(math.exp(-(c - r))) for c, r in zip(rc.tolist(), rr.tolist(), strict=True))
        / 4
    )
    assert abs(loss.item() - expected) < 1e-6
    assert acc.item() == 0.5  # one tie counts as a miss
