"""Tests for lmlab.train.optim (Muon + AdamW) and its selection in make_optimizer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from lmlab.model.transformer import Transformer
from lmlab.train.loop import make_optimizer
from lmlab.train.optim import NS_COEFFICIENTS, NS_STEPS, MuonAdamW, muon_update, orthogonalize
from lmlab.train.pretrain import pretrain
from tests.conftest import tiny_model_config


def _orthogonal(n: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return q * np.sign(np.diag(r))


def _quintic(s: np.ndarray) -> np.ndarray:
    """The Newton-Schulz iteration by hand, on the singular values (float64)."""
    a, b, c = NS_COEFFICIENTS
    x = s / np.sqrt((s**2).sum())
    for _ in range(NS_STEPS):
        x = a * x + b * x**3 + c * x**5
    return x


@pytest.mark.parametrize("shape", [(3, 3), (3, 5), (5, 3)])
def test_orthogonalize_applies_the_quintic_to_the_singular_values(shape: tuple[int, int]) -> None:
    m, n = shape
    k = min(m, n)
    u, v = _orthogonal(m, 1)[:, :k], _orthogonal(n, 2)[:, :k]
    s = np.array([4.0, 1.0, 0.25])[:k]
    g = u @ np.diag(s) @ v.T
    expected = u @ np.diag(_quintic(s)) @ v.T
    got = orthogonalize(torch.tensor(g, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # and the result is close to U V^T: every singular value within the quintic's band
    sv = np.linalg.svd(got, compute_uv=False)
    assert sv.min() > 0.6 and sv.max() < 1.25


def test_muon_update_orthogonalises_each_split_and_scales_tall_blocks() -> None:
    torch.manual_seed(0)
    g = torch.randn(10, 4)
    out = muon_update(g, (2, 8))
    torch.testing.assert_close(out[:2], orthogonalize(g[:2]))
    torch.testing.assert_close(out[2:], orthogonalize(g[2:]) * math.sqrt(8 / 4))
    torch.testing.assert_close(muon_update(g), orthogonalize(g) * math.sqrt(10 / 4))
    batch = torch.randn(3, 4, 6)  # stacked experts: one matrix each
    torch.testing.assert_close(muon_update(batch)[1], orthogonalize(batch[1]))


def test_a_muon_step_is_the_orthogonalised_nesterov_update() -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4, 6))
    p0 = p.detach().clone()
    g1, g2 = torch.randn(4, 6), torch.randn(4, 6)
    opt = MuonAdamW(
        [{"params": [p], "muon": True, "lr_scale": 2.0, "momentum": 0.9, "weight_decay": 0.5}],
        lr=0.01,
    )
    lr = 0.01 * 2.0
    p.grad = g1.clone()
    opt.step()
    # first step: buffer = g1, Nesterov update g1 + 0.9 * g1; decay before the update
    expected = p0 * (1 - lr * 0.5) - lr * orthogonalize(1.9 * g1)
    torch.testing.assert_close(p.detach(), expected)
    p.grad = g2.clone()
    opt.step()
    buf = 0.9 * g1 + g2
    expected = expected * (1 - lr * 0.5) - lr * orthogonalize(g2 + 0.9 * buf)
    torch.testing.assert_close(p.detach(), expected)


def test_adamw_groups_match_torch_adamw() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = a.detach().clone().requires_grad_(True)
    ours = MuonAdamW([{"params": [a], "weight_decay": 0.1, "betas": (0.8, 0.9)}], lr=0.05)
    ref = torch.optim.AdamW([b], lr=0.05, betas=(0.8, 0.9), weight_decay=0.1, eps=1e-8)
    for _ in range(5):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(a.detach(), b.detach())


def test_muon_groups_reject_vectors() -> None:
    with pytest.raises(ValueError, match="matrices"):
        MuonAdamW([{"params": [torch.nn.Parameter(torch.zeros(3))], "muon": True}], lr=0.1)


def test_make_optimizer_muon_takes_the_block_matrices_and_splits_fused_ones() -> None:
    cfg = ModelConfig(
        vocab_size=64, context_length=16, n_layer=2, n_head=4, n_kv_head=2, d_model=32
    )
    model = Transformer(cfg)
    train = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02)
    opt = make_optimizer(model, train, torch.device("cpu"))
    assert isinstance(opt, MuonAdamW)
    muon = [g for g in opt.param_groups if g["muon"]]
    assert len(muon) == 1 and muon[0]["lr_scale"] == pytest.approx(20.0)
    names = {id(p): n for n, p in model.named_parameters()}
    taken = {names[id(p)]: s for p, s in zip(muon[0]["params"], muon[0]["splits"], strict=True)}
    assert set(taken) == {
        f"blocks.{i}.{m}" for i in range(2) for m in ("attn.wqkv.weight", "attn.wo.weight")
    } | {f"blocks.{i}.{m}" for i in range(2) for m in ("ffn.w13.weight", "ffn.w2.weight")}
    assert taken["blocks.0.attn.wqkv.weight"] == (32, 16, 16)  # 4 query heads, 2 kv heads of 8
    assert taken["blocks.0.ffn.w13.weight"] == (cfg.ffn_dim, cfg.ffn_dim)
    assert taken["blocks.0.attn.wo.weight"] is None
    rest = {names[id(p)] for g in opt.param_groups if not g["muon"] for p in g["params"]}
    assert "embed.weight" in rest and "norm.weight" in rest
    assert isinstance(make_optimizer(model, TrainConfig(), torch.device("cpu")), torch.optim.AdamW)


def test_muon_trains_and_its_state_round_trips() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=32, context_length=16, n_layer=1, n_head=2, d_model=16)
    model = Transformer(cfg)
    train = TrainConfig(optimizer="muon", lr=1e-2, muon_lr=0.05)
    opt = make_optimizer(model, train, torch.device("cpu"))
    x = torch.arange(16).repeat(4, 1) % 7  # a periodic sequence: easy to predict
    losses = []
    for _ in range(40):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    again = make_optimizer(model, train, torch.device("cpu"))
    again.load_state_dict(opt.state_dict())
    for p in model.parameters():
        for k, v in opt.state[p].items():
            torch.testing.assert_close(again.state[p][k], v)


def test_config_rejects_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd").validate()  # type: ignore[arg-type]


def test_pretraining_with_muon_resumes_exactly(corpus_file: Path, tmp_path: Path) -> None:
    """10 steps straight == 5 steps, then resumed to 10 (optimizer state through checkpoints;
    a constant learning rate, so that the shorter first run has the same schedule)."""

    def cfg(steps: int) -> RunConfig:
        return RunConfig(
            model=tiny_model_config(context_length=32),
            train=TrainConfig(
                batch_size=4,
                max_steps=steps,
                eval_every=5,
                eval_iters=2,
                log_every=1,
                lr=3e-3,
                min_lr=3e-3,
                warmup_steps=0,
                optimizer="muon",
            ),
            data=DataConfig(corpus=str(corpus_file), tokenizer="char", val_fraction=0.1),
        )

    straight = pretrain(cfg(10), tmp_path / "a", show_progress=False).summary
    pretrain(cfg(5), tmp_path / "b", show_progress=False)
    resumed = pretrain(None, tmp_path / "b", resume=True, show_progress=False, max_steps=10).summary
    assert resumed["train_loss"] == straight["train_loss"]
    assert resumed["val_loss"] == straight["val_loss"]


def test_cpu_bf16_autocast_trains(corpus_file: Path, tmp_path: Path) -> None:
    cfg = RunConfig(
        model=tiny_model_config(context_length=32),
        train=TrainConfig(batch_size=4, max_steps=4, eval_every=4, eval_iters=1, cpu_bf16=True),
        data=DataConfig(corpus=str(corpus_file), tokenizer="char", val_fraction=0.1),
    )
    last = pretrain(cfg, tmp_path / "run", show_progress=False).summary
    assert math.isfinite(last["val_loss"])
    model = Transformer(cfg.model)
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32


def test_muon_refuses_fsdp_shards() -> None:
    with pytest.raises(ValueError, match="whole matrices"):
        TrainConfig(optimizer="muon", parallel="fsdp").validate()
    TrainConfig(optimizer="muon", parallel="ddp").validate()
