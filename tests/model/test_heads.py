"""Tests for lmlab.model.heads."""

from __future__ import annotations

import pytest
import torch

from lmlab.model.heads import ScalarHeadModel, normalise_reward
from lmlab.model.transformer import Transformer
from tests.conftest import tiny_model_config


def test_scalar_head_reads_the_trunk_and_trains() -> None:
    torch.manual_seed(0)
    model = ScalarHeadModel(Transformer(tiny_model_config()))
    x = torch.randint(0, 128, (3, 9))
    values = model(x)
    assert values.shape == (3, 9) and values.dtype == torch.float32
    last = torch.tensor([8, 4, 0])
    torch.testing.assert_close(model.score(x, last), values[torch.arange(3), last])
    # causal: the score at position 4 ignores later tokens
    y = x.clone()
    y[:, 6:] = 0
    torch.testing.assert_close(model(y)[:, :5], values[:, :5])
    model.score(x, last).sum().backward()
    assert model.trunk.blocks[0].attn.wqkv.weight.grad is not None


def test_normalise_reward_gives_mean_zero_std_one_and_keeps_the_order() -> None:
    torch.manual_seed(0)
    model = ScalarHeadModel(Transformer(tiny_model_config()))
    x = torch.randint(0, 128, (6, 9))
    with torch.no_grad():
        model.head.bias.fill_(3.0)
        model.head.weight.mul_(5.0)
        before = model(x)
        normalise_reward(model, float(before.mean()), float(before.std(unbiased=False)))
        after = model(x)
    assert abs(after.mean().item()) < 1e-5
    assert after.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(after, (before - before.mean()) / before.std(unbiased=False))
    # the same state-dict keys as a fresh head: runs saved before the gain existed still load
    assert model.state_dict().keys() == ScalarHeadModel(model.trunk).state_dict().keys()


def test_normalise_reward_with_zero_std_only_removes_the_mean() -> None:
    model = ScalarHeadModel(Transformer(tiny_model_config()))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.fill_(2.5)
        normalise_reward(model, 2.5, 0.0)
    assert torch.count_nonzero(model(torch.randint(0, 128, (2, 5)))) == 0
