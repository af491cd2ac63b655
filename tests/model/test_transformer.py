"""Tests for lmlab.model.transformer: masking, accounting, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmlab.config import ModelConfig, MoEConfig
from lmlab.model.transformer import Transformer, accounting_rows, flops_per_token, param_counts
from tests.conftest import tiny_model_config


@pytest.mark.parametrize(("n_kv_head", "smear"), [(None, False), (2, False), (1, False), (2, True)])
def test_causal_masking(n_kv_head: int | None, smear: bool) -> None:
    """Changing a future token never changes the logits of earlier positions."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(n_kv_head=n_kv_head, smear=smear)).eval()
    if model.smear is not None:
        with torch.no_grad():
            model.smear.fill_(1.0)
    x = torch.randint(0, 128, (2, 20))
    base = model(x)
    for t in (0, 7, 19):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % 128
        out = model(y)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t], base[:, t])


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"tie_embeddings": False},
        {"n_kv_head": 2},
        {"n_kv_head": 1, "d_ff": 50},
        {"smear": True},
        {"qkv_bias": True, "n_kv_head": 2},
    ],
)
def test_param_counts_match_module(kw: dict) -> None:
    cfg = tiny_model_config(**kw)
    model = Transformer(cfg)
    counts = param_counts(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    emb = model.embed.weight.numel() + (0 if cfg.tie_embeddings else model.lm_head.weight.numel())
    assert counts["embedding"] == emb
    assert counts["non_embedding"] == counts["total"] - emb


def test_flops_per_token() -> None:
    cfg = tiny_model_config()
    f = flops_per_token(cfg, seq_len=64)
    counts = param_counts(cfg)
    norms = (2 * cfg.n_layer + 1) * cfg.d_model
    n_matmul = counts["non_embedding"] - norms + cfg.vocab_size * cfg.d_model
    assert f["n_matmul"] == n_matmul
    assert f["train"] == 6 * n_matmul + 12 * cfg.n_layer * 64 * cfg.d_model
    assert f["forward"] == pytest.approx(f["train"] / 3)
    # q/k/v biases (Qwen2) are added, not multiplied: they change no FLOP count
    biased = tiny_model_config(qkv_bias=True)
    assert flops_per_token(biased, seq_len=64) == f
    assert param_counts(biased)["total"] > counts["total"]
    assert all(not b.attn.wqkv.bias.any() for b in Transformer(biased).blocks)  # start at 0


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_model_config())
    x = torch.randint(0, 128, (4, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_positions_argument_matches_default() -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_model_config()).eval()
    x = torch.randint(0, 128, (2, 12))
    pos = torch.arange(12).expand(2, 12)
    torch.testing.assert_close(model(x, positions=pos), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"d_model": 30, "n_head": 4}, "not divisible"),
        ({"n_head": 4, "n_kv_head": 3}, "not divisible"),
        ({"context_length": 10**7}, "above the maximum"),
    ],
)
def test_invalid_configs(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        ModelConfig(**{"d_model": 32, "n_head": 4, **kw}).validate()


def test_sequence_longer_than_context() -> None:
    model = Transformer(tiny_model_config(context_length=16))
    with pytest.raises(ValueError, match="context"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_smear_adds_the_gated_previous_embedding() -> None:
    """x_t = e(t) + smear * e(t-1), zero before the first token unless `prev` is given; the gate
    starts at zero (the plain model)."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(smear=True))
    assert model.smear is not None and not model.smear.any()
    with torch.no_grad():
        model.smear.normal_()
    x = torch.randint(0, 128, (2, 5))
    e = model.embed.weight
    want = e[x].clone()
    want[:, 1:] += model.smear * e[x[:, :-1]]
    torch.testing.assert_close(model.embed_tokens(x), want)
    prev = torch.tensor([3, 4])
    want[:, 0] += model.smear * e[prev]
    torch.testing.assert_close(model.embed_tokens(x, prev), want)


def test_accounting_rows_report_the_counts() -> None:
    dense = tiny_model_config()
    rows = dict(accounting_rows(dense))
    assert rows["params total"] == f"{param_counts(dense)['total']:,}"
    assert rows["forward FLOPs / token"] == f"{flops_per_token(dense)['forward']:.4g}"
    assert not any(label.startswith("MoE") for label in rows)
    moe = tiny_model_config(moe=MoEConfig(n_experts=4, top_k=2))
    rows = dict(accounting_rows(moe))
    assert rows["params active"].startswith(f"{param_counts(moe)['active']:,}  (")
    assert rows["MoE experts / top-k / shared / d_exp"].startswith("4 / 2 / 0 / ")
