"""MoE layer: dispatch against a naive per-token loop, gradients, balancing losses, the
aux-loss-free bias (counted in training forwards, moved once per update), capacity dropping,
batch independence at inference, accounting and checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lmlab.config import ModelConfig, MoEConfig, RunConfig, preset
from lmlab.model.moe import (
    MoE,
    grouped_mm,
    load_balance,
    moe_layers,
    routing_metrics,
    routing_report,
    update_balance_bias,
)
from lmlab.model.transformer import Transformer, flops_per_token, param_counts
from lmlab.train.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import tiny_model_config


def moe_config(**moe: object) -> ModelConfig:
    base: dict[str, object] = dict(n_experts=4, top_k=2, bias_speed=0.0)
    base.update(moe)
    return tiny_model_config(moe=MoEConfig(**base))  # type: ignore[arg-type]


def make_layer(**moe: object) -> MoE:
    torch.manual_seed(0)
    layer = MoE(moe_config(**moe), 0)
    with torch.no_grad():  # larger router weights than the init so routing is decisive
        layer.router.weight.normal_(0, 0.5)
    return layer


def naive(layer: MoE, x: torch.Tensor) -> torch.Tensor:
    """The MoE output computed one token and one chosen expert at a time."""
    flat = x.reshape(-1, x.shape[-1])
    _, _, chosen, gates = layer.route(flat)
    out = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        for j in range(layer.top_k):
            e = int(chosen[t, j])
            g, u = (flat[t] @ layer.w13[e]).chunk(2)
            out[t] += gates[t, j] * ((F.silu(g) * u) @ layer.w2[e])
        if layer.shared is not None:
            out[t] += layer.shared(flat[t])
    return out.reshape(x.shape)


@pytest.mark.parametrize("gemm", ["auto", "loop", "grouped_mm"])
@pytest.mark.parametrize(
    "moe",
    [
        {},
        {"score": "sigmoid", "n_shared": 1},
        {"renormalize": False, "top_k": 1},
        {"n_experts": 8, "top_k": 3, "d_expert": 16},
    ],
)
def test_dispatch_equals_naive_loop(gemm: str, moe: dict[str, object]) -> None:
    if gemm == "grouped_mm" and not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm not available")
    layer = make_layer(**moe)
    layer.gemm = gemm  # type: ignore[assignment]
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(layer(x), naive(layer, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("gemm", ["loop", "auto"])
def test_dispatch_gradients_equal_naive_loop(gemm: str) -> None:
    layer = make_layer(n_shared=1)
    layer.gemm = gemm  # type: ignore[assignment]
    x = torch.randn(2, 5, 32, requires_grad=True)
    grads = []
    for fn in (layer, lambda t: naive(layer, t)):
        layer.zero_grad()
        x.grad = None
        fn(x).square().sum().backward()
        grads.append([x.grad.clone(), *(p.grad.clone() for p in layer.parameters())])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_grouped_mm_empty_groups() -> None:
    x, w = torch.randn(6, 8), torch.randn(4, 8, 12)
    counts = torch.tensor([0, 4, 0, 2])
    want = torch.cat([x[:4] @ w[1], x[4:] @ w[3]])
    for impl in ("loop", "auto"):
        torch.testing.assert_close(grouped_mm(x, w, counts, impl), want)  # type: ignore[arg-type]


def test_gradients_reach_router_and_experts() -> None:
    layer = make_layer(n_shared=1, aux_loss=0.01, z_loss=0.001)
    layer.train()
    x = torch.randn(2, 16, 32, requires_grad=True)
    (layer(x).square().mean() + layer.aux_losses).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the router learns from the task loss alone too (through the gate weights)
    layer.zero_grad()
    layer(x).square().mean().backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0


def test_switch_loss_equals_alpha_at_uniform_routing() -> None:
    alpha, E, k = 0.01, 4, 2
    layer = make_layer(n_experts=E, top_k=k, aux_loss=alpha, z_loss=0.0)
    with torch.no_grad():
        layer.router.weight.zero_()  # every probability 1/E
    x = torch.randn(8, 32)
    counts = torch.full((E,), 8 * k // E)
    layer._balance(torch.zeros(8, E), torch.full((8, E), 1 / E), counts, torch.zeros(()))
    assert layer.aux_losses is not None
    assert float(layer.aux_losses) == pytest.approx(alpha, rel=1e-6)
    # and through a real forward: zero router -> uniform probs; P_i = 1/E makes the loss
    # alpha * E * sum_i f_i / E = alpha whatever the counts are
    layer(x)
    assert layer.stats is not None
    assert float(layer.stats.aux_loss) == pytest.approx(alpha, rel=1e-6)
    # z-loss at zero logits is (log E)^2 times its weight
    layer2 = make_layer(n_experts=E, aux_loss=0.0, z_loss=0.001)
    with torch.no_grad():
        layer2.router.weight.zero_()
    layer2(x)
    assert layer2.stats is not None
    assert float(layer2.stats.z_loss) == pytest.approx(0.001 * math.log(E) ** 2, rel=1e-5)


def test_switch_loss_grows_with_imbalance() -> None:
    layer = make_layer(n_experts=4, top_k=1, aux_loss=0.01, z_loss=0.0)
    probs = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).repeat(8, 1)
    layer._balance(probs.log(), probs, torch.tensor([8, 0, 0, 0]), torch.zeros(()))
    assert layer.aux_losses is not None and float(layer.aux_losses) > 0.01 * 2


def test_bias_update_moves_load_toward_balance() -> None:
    """A router skewed toward expert 0: the aux-loss-free bias alone (default speed 0.001)
    spreads the load."""
    torch.manual_seed(0)
    layer = MoE(moe_config(n_experts=4, top_k=1, bias_speed=0.001, aux_loss=0, z_loss=0), 0)
    with torch.no_grad():
        layer.router.weight.normal_(0, 0.1)
        layer.router.weight[0] += 0.05  # bias every token toward expert 0 ...
    x = torch.randn(512, 32).abs()  # ... with positive inputs
    layer.eval()
    layer(x)
    assert layer.stats is not None
    cv_before = load_balance(layer.stats.counts)["cv"]
    assert cv_before > 1.0
    bias_before = layer.expert_bias.clone()
    layer.train()
    for _ in range(300):
        layer(x)
        update_balance_bias(layer)
    layer.eval()
    layer(x)
    cv_after = load_balance(layer.stats.counts)["cv"]
    assert cv_after < 0.1
    assert layer.expert_bias[0] < bias_before[0]  # the overloaded expert was pushed down
    assert all(p.grad is None for p in layer.parameters())  # the update is outside autograd
    # deterministic: the same run again gives the same bias
    layer2 = MoE(moe_config(n_experts=4, top_k=1, bias_speed=0.001, aux_loss=0, z_loss=0), 0)
    layer2.load_state_dict({**layer.state_dict(), "expert_bias": torch.zeros(4)})
    layer2.train()
    for _ in range(300):
        layer2(x)
        update_balance_bias(layer2)
    torch.testing.assert_close(layer2.expert_bias, layer.expert_bias, atol=0, rtol=0)


def _biases(model: torch.nn.Module) -> torch.Tensor:
    return torch.stack([m.expert_bias.clone() for m in moe_layers(model)])


def _skewed_moe(bias_speed: float = 0.01) -> Transformer:
    """A tiny MoE transformer whose routers favour some experts, so the bias has work to do."""
    torch.manual_seed(0)
    model = Transformer(moe_config(n_experts=4, top_k=1, bias_speed=bias_speed))
    with torch.no_grad():
        for m in moe_layers(model):
            m.router.weight.normal_(0, 0.5)
    return model


def test_bias_moves_only_in_update_and_only_from_training_forwards() -> None:
    """Forwards never move the bias themselves; eval-mode, no_grad and inference_mode forwards
    (scoring, the engine) add nothing to the load the next update uses, training-mode ones do."""
    idx = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(1))
    other = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(2))
    model = _skewed_moe()
    model.train()
    model(idx)  # a training forward with no update after it: the bias stays where it was
    assert (_biases(model) == 0).all()
    model.eval()
    model(other)
    model.train()
    with torch.no_grad():
        model(other)
    with torch.inference_mode():
        model(other)
    assert (_biases(model) == 0).all()
    update_balance_bias(model)
    moved = _biases(model)
    assert moved.abs().sum() > 0

    # the same model given only the one training forward moves its bias the same way
    ref = _skewed_moe()
    ref.train()
    ref(idx)
    update_balance_bias(ref)
    torch.testing.assert_close(moved, _biases(ref), atol=0, rtol=0)
    # with no training forward since the last update there is no load, and nothing moves
    update_balance_bias(model)
    torch.testing.assert_close(_biases(model), moved, atol=0, rtol=0)
    # non-training forwards alone never move it
    fresh = _skewed_moe()
    fresh.eval()
    fresh(other)
    with torch.inference_mode():
        fresh.train()(other)
    update_balance_bias(fresh)
    assert (_biases(fresh) == 0).all()


def test_bias_update_uses_the_load_of_all_forwards_since_the_last() -> None:
    """Two training forwards (micro-batches, or SFT's replay forward) then one update move the
    bias exactly as one forward over both batches does: the update sees their summed load,
    and moves each expert by at most bias_speed."""
    speed = 0.01
    a = torch.randint(0, 128, (3, 16), generator=torch.Generator().manual_seed(3))
    b = torch.randint(0, 128, (5, 16), generator=torch.Generator().manual_seed(4))
    split, whole = _skewed_moe(speed), _skewed_moe(speed)
    split.train()
    whole.train()
    before = _biases(whole)
    for _ in range(4):
        split(a)
        split(b)
        update_balance_bias(split)
        whole(torch.cat([a, b]))
        update_balance_bias(whole)
        torch.testing.assert_close(_biases(split), _biases(whole), atol=0, rtol=0)
        # one move per update: by -speed, 0 or +speed per expert, by speed for some
        assert float((_biases(whole) - before).abs().max()) == pytest.approx(speed)
        before = _biases(whole)


def test_update_balance_bias_is_a_no_op_without_a_bias() -> None:
    dense = Transformer(tiny_model_config()).train()
    dense(torch.randint(0, 128, (2, 8)))
    update_balance_bias(dense)  # dense: nothing to do, no error
    model = _skewed_moe(bias_speed=0.0).train()
    model(torch.randint(0, 128, (2, 8)))
    update_balance_bias(model)
    assert (_biases(model) == 0).all()
    assert all(m.step_counts is None for m in moe_layers(model))  # bias_speed 0 counts nothing


def test_bias_changes_selection_not_gate_weights() -> None:
    layer = make_layer(n_experts=4, top_k=1, renormalize=False)
    x = torch.randn(16, 32)
    with torch.no_grad():
        layer.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0]))
    _, probs, chosen, gates = layer.route(x)
    assert (chosen == 3).all()
    torch.testing.assert_close(gates[:, 0], probs[:, 3])


def test_dropless_drops_nothing_and_capacity_drops_the_right_fraction() -> None:
    E, k, N = 4, 2, 64
    layer = make_layer(n_experts=E, top_k=k)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0] = 1.0  # with positive inputs expert 0 wins for every token
    x = torch.rand(N, 32) + 0.1
    layer.train()
    layer(x)
    assert layer.stats is not None and float(layer.stats.dropped) == 0.0
    assert int(layer.stats.counts.sum()) == N * k

    cf = 1.0
    layer.cfg.capacity_factor = cf
    capacity = math.ceil(cf * N * k / E)
    y = layer(x)
    counts = layer.stats.counts
    want = 1 - float(counts.clamp(max=capacity).sum()) / (N * k)
    assert want > 0
    assert float(layer.stats.dropped) == pytest.approx(want)
    # the earliest tokens keep their slot in the overloaded expert: the first `capacity`
    # tokens' outputs match the dropless result, later ones lose expert 0's contribution
    layer.eval()  # inference is always dropless, whatever the capacity factor
    y_full = layer(x)
    assert float(layer.stats.dropped) == 0.0
    torch.testing.assert_close(y[:capacity], y_full[:capacity])
    assert not torch.allclose(y[capacity:], y_full[capacity:])


def test_batched_and_single_sequence_inference_identical() -> None:
    torch.manual_seed(0)
    cfg = moe_config(n_experts=4, top_k=2, n_shared=1, bias_speed=0.001)
    model = Transformer(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (4, 16))
    with torch.no_grad():
        batched = model(idx)
        for i in range(idx.shape[0]):
            single = model(idx[i : i + 1])
            torch.testing.assert_close(single[0], batched[i], atol=1e-5, rtol=1e-5)
    assert (model.blocks[0].ffn.expert_bias == 0).all()  # eval never updates the bias


def test_param_counts_and_flops() -> None:
    cfg = moe_config(n_experts=8, top_k=2, n_shared=1, every=2)
    cfg.n_layer = 4
    model = Transformer(cfg)
    counts = param_counts(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert [type(b.ffn).__name__ for b in model.blocks] == ["SwiGLU", "MoE", "SwiGLU", "MoE"]
    inactive = 2 * (8 - 2) * 3 * cfg.d_model * cfg.expert_dim
    assert counts["total"] - counts["active"] == inactive
    flops = flops_per_token(cfg)
    assert flops["n_matmul_total"] - flops["n_matmul"] == inactive
    dense = tiny_model_config()
    assert param_counts(dense)["active"] == param_counts(dense)["total"]


def test_default_expert_dim_matches_dense_active_params() -> None:
    moe = preset("tiny-moe").model
    dense = preset("tiny").model
    assert moe.expert_dim * moe.moe.top_k == dense.ffn_dim
    extra = param_counts(moe)["active"] - param_counts(dense)["active"]
    assert extra == moe.n_layer * moe.d_model * moe.moe.n_experts  # only the routers


def test_invalid_moe_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="top_k"):
        moe_config(n_experts=4, top_k=5).validate()
    with pytest.raises(ValueError, match="capacity"):
        moe_config(capacity_factor=0.0).validate()


def test_config_round_trip_and_checkpoint(tmp_path: Path) -> None:
    cfg = RunConfig(model=moe_config(n_experts=4, top_k=2, bias_speed=0.01))
    cfg.save(tmp_path / "config.json")
    loaded = RunConfig.load(tmp_path / "config.json")
    assert loaded.model.moe == cfg.model.moe
    model = Transformer(cfg.model)
    model.train()
    model(torch.randint(0, 128, (2, 16)))
    update_balance_bias(model)  # moves the selection bias
    bias = model.blocks[0].ffn.expert_bias.clone()
    assert bias.abs().sum() > 0
    # the bias is saved with the weights; the load counted within a step is not state
    assert {k for k in model.state_dict() if "ffn." in k and "expert_bias" not in k} == {
        f"blocks.{i}.ffn.{name}" for i in range(2) for name in ("router.weight", "w13", "w2")
    }
    save_checkpoint(tmp_path, model, None, {"step": 1, "tokens": 0})
    fresh = Transformer(loaded.model)
    load_checkpoint(tmp_path / "checkpoints" / "step_000001", fresh)
    torch.testing.assert_close(fresh.blocks[0].ffn.expert_bias, bias)


def test_routing_metrics_and_report() -> None:
    torch.manual_seed(0)
    cfg = moe_config(n_experts=4, top_k=2)
    model = Transformer(cfg)
    batches = [(torch.randint(0, 128, (2, 16)),) for _ in range(3)]
    model(batches[0][0])
    metrics = routing_metrics(model)
    for layer in range(cfg.n_layer):
        for key in ("cv", "maxvio", "entropy", "dropped", "aux_loss", "z_loss"):
            assert f"moe/L{layer}/{key}" in metrics
        loads = [metrics[f"moe/L{layer}/load/{e}"] for e in range(4)]
        assert sum(loads) == pytest.approx(1.0)
        assert 0 < metrics[f"moe/L{layer}/entropy"] <= math.log(4) + 1e-6
    report = routing_report(model, batches)
    assert [r["layer"] for r in report] == list(range(cfg.n_layer))
    assert sum(report[0]["load"]) == pytest.approx(1.0)
    assert routing_metrics(Transformer(tiny_model_config())) == {}


def test_load_balance_values() -> None:
    assert load_balance(torch.tensor([5.0, 5.0, 5.0, 5.0])) == {"cv": 0.0, "maxvio": 0.0}
    lb = load_balance(torch.tensor([8.0, 0.0, 0.0, 0.0]))
    assert lb["maxvio"] == pytest.approx(3.0)
    assert lb["cv"] == pytest.approx(math.sqrt(3.0))


def test_pretrain_logs_routing_metrics_and_moe_stats_cli(corpus_file: Path, tmp_path: Path) -> None:
    """End to end: a tiny MoE pretrains (aux losses in the objective, per-layer stats in the
    metrics log) and `lmlab moe-stats` reports on its validation batches."""
    import json

    from lmlab.cli import main
    from lmlab.config import DataConfig, TrainConfig
    from lmlab.train.pretrain import pretrain

    cfg = RunConfig(
        model=tiny_model_config(context_length=32, moe=MoEConfig(n_experts=4, top_k=2)),
        train=TrainConfig(
            batch_size=4, max_steps=6, eval_every=3, eval_iters=2, log_every=1, warmup_steps=2
        ),
        data=DataConfig(corpus=str(corpus_file), tokenizer="char", val_fraction=0.1),
    )
    run = tmp_path / "run"
    pretrain(cfg, run, show_progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    for key in ("ce", "moe/cv", "moe/L1/maxvio", "moe/L0/load/3", "moe/aux_loss", "moe/z_loss"):
        assert key in last, key
    # the training loss is the cross-entropy plus the balancing losses
    assert last["train_loss"] == pytest.approx(
        last["ce"] + last["moe/aux_loss"] + last["moe/z_loss"], rel=1e-5
    )
    png = tmp_path / "load.png"
    argv = ["moe-stats", str(run), "--batches", "2", "--batch-size", "2", "--png", str(png)]
    assert main(argv) == 0
    assert png.stat().st_size > 0
    assert main(["moe-stats", str(tmp_path / "missing")]) == 2
