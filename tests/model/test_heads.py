"""Tests for lmlab.model.heads."""

from __future__ import annotations

import torch

from lmlab.model.heads import ScalarHeadModel, set_reward_offset
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
    set_reward_offset(model, float(values.detach().mean()))
    assert abs(model(x).mean().item()) < 1e-5
