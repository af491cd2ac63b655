"""MoE benchmark (issue 4), one run: (a) layer throughput, (b) quality and load balance.

    python benchmarks/moe.py --quick          # (a) only, under a minute
    python benchmarks/moe.py                  # (a) then (b): three short pretraining runs

(a) Forward + backward tokens/s of one MoE layer (8 experts, top-2, dropless, routing stats and
balancing losses computed as in training) against two peers in the same process:
  - a dense SwiGLU with the same ACTIVE parameters (hidden = 2 x expert hidden): target >= 0.7x;
  - `transformers`' Mixtral sparse MoE block holding the same weights (its outputs are checked
    equal first), the faster of its `eager` and `grouped_mm` expert implementations: >= 1.2x.
Timings interleave the contenders round by round and keep each one's fastest round (on a shared
CPU, interference from other jobs only ever adds time). By default both parts run on one
thread: on a CPU shared with other jobs, two-thread timings (of the smaller per-expert matmuls
above all) are dominated by waiting for the busy second core (`--threads 0`: torch's default).

(b) Quality on python-stdlib: dense `tiny` vs `tiny-moe` (8 experts top-2, same active
parameters), same data, seed and steps; the MoE once with balancing on (Switch aux 0.01, z-loss
0.001, aux-loss-free bias 0.001) and once with all three off. Reports final validation
cross-entropy and the per-layer load CV on validation batches, and writes the load histogram.

The last output line is one JSON object (keys `ratio_vs_dense_active`, `ratio_vs_hf_mixtral`,
and with (b) the quality figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lmlab.config import ModelConfig, MoEConfig, RunConfig, preset
from lmlab.model.moe import MoE, plot_load, routing_report
from lmlab.model.transformer import SwiGLU

D_MODEL, N_EXPERTS, TOP_K = 512, 8, 2


def layer_config(d_model: int) -> ModelConfig:
    # bias_speed 0: the selection bias would otherwise drift during timing and differ from HF.
    return ModelConfig(d_model=d_model, n_head=8, moe=MoEConfig(N_EXPERTS, TOP_K, bias_speed=0))


def hf_block(layer: MoE, impl: str) -> nn.Module:
    """transformers' MixtralSparseMoeBlock holding `layer`'s weights."""
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    d, h = layer.w13.shape[1], layer.d_expert
    cfg = MixtralConfig(
        hidden_size=d,
        intermediate_size=h,
        num_local_experts=layer.n_experts,
        num_experts_per_tok=layer.top_k,
        router_jitter_noise=0.0,
    )
    cfg._experts_implementation = impl
    block = MixtralSparseMoeBlock(cfg)
    with torch.no_grad():
        block.gate.weight.copy_(layer.router.weight)
        block.experts.gate_up_proj.copy_(layer.w13.transpose(1, 2))  # [E, 2h, d], gate first
        block.experts.down_proj.copy_(layer.w2.transpose(1, 2))  # [E, d, h]
    return block.train()


def fwd_bwd(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        module(x).backward(grad)
        for p in module.parameters():
            p.grad = None

    return step


def throughput(tokens: int, rounds: int, d_model: int) -> dict[str, float]:
    torch.manual_seed(0)
    cfg = layer_config(d_model)
    moe = MoE(cfg, 0).train()
    with torch.no_grad():
        moe.router.weight.normal_(0, 0.1)  # a trained-looking, uneven but not collapsed router
    dense = SwiGLU(d_model, TOP_K * cfg.expert_dim).train()
    x = torch.randn(tokens // 256, 256, d_model)
    grad = torch.randn_like(x)
    contenders: dict[str, nn.Module] = {"lmlab_moe": moe, "dense_active": dense}
    for impl in ("eager", "grouped_mm"):
        block = hf_block(moe, impl)
        with torch.no_grad():
            torch.testing.assert_close(block(x), moe(x), atol=1e-4, rtol=1e-3)
        contenders[f"hf_mixtral_{impl}"] = block
    steps = {name: fwd_bwd(m, x, grad) for name, m in contenders.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm up
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    tok_s = {name: tokens / min(t) for name, t in times.items()}
    hf_best = max(("eager", "grouped_mm"), key=lambda i: tok_s[f"hf_mixtral_{i}"])
    return {
        "d_model": d_model,
        "d_expert": cfg.expert_dim,
        "tokens": tokens,
        **{f"{k}_tokens_per_s": round(v) for k, v in tok_s.items()},
        "hf_best_impl": hf_best,
        "ratio_vs_dense_active": tok_s["lmlab_moe"] / tok_s["dense_active"],
        "ratio_vs_hf_mixtral": tok_s["lmlab_moe"] / tok_s[f"hf_mixtral_{hf_best}"],
    }


def quality(
    steps: int, png: Path, variants: list[str], keep: Path | None = None
) -> dict[str, object]:
    from lmlab.data.shards import Batches, prepare_data
    from lmlab.model.load import load_run
    from lmlab.train.pretrain import pretrain

    def cfg(name: str, **moe: float) -> RunConfig:
        c = preset(name)
        c.train.max_steps = steps
        c.train.warmup_steps = max(1, steps // 20)
        c.train.eval_every = steps
        c.train.log_every = max(1, steps // 10)
        c.train.device = "cpu"
        for k, v in moe.items():
            setattr(c.model.moe, k, v)
        return c

    runs = {
        "dense": cfg("tiny"),
        "moe_balanced": cfg("tiny-moe"),
        "moe_unbalanced": cfg("tiny-moe", aux_loss=0.0, z_loss=0.0, bias_speed=0.0),
    }
    runs = {k: v for k, v in runs.items() if k in variants}
    out: dict[str, object] = {"steps": steps, "tokens": steps * 16 * 256}
    reports = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = keep or Path(tmp_dir)
        for name, c in runs.items():
            t0 = time.perf_counter()
            last = pretrain(c, Path(tmp) / name, show_progress=False).summary
            out[f"{name}_val_loss"] = round(last["val_loss"], 4)
            out[f"{name}_minutes"] = round((time.perf_counter() - t0) / 60, 2)
            if c.model.moe.n_experts:
                model, _, rcfg = load_run(Path(tmp) / name)
                _, shards, _ = prepare_data(rcfg, show_progress=False)
                val = Batches(shards.val, rcfg.model.context_length, rcfg.train.seed)
                report = routing_report(model, val.eval_batches(20, 8))
                reports[name.removeprefix("moe_")] = report
                out[f"{name}_cv_per_layer"] = [round(r["cv"], 3) for r in report]
                out[f"{name}_maxvio_per_layer"] = [round(r["maxvio"], 3) for r in report]
            print(json.dumps({name: {k: v for k, v in out.items() if k.startswith(name)}}))
            sys.stdout.flush()
    out["load_png"] = str(png) if reports and plot_load(reports, png) else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="throughput part (a) only")
    ap.add_argument("--tokens", type=int, default=2048, help="tokens per layer call in (a)")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per contender in (a)")
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps per run in (b)")
    ap.add_argument("--png", type=Path, default=Path("docs/moe_load.png"), help="histogram")
    ap.add_argument("--threads", type=int, default=1, help="torch threads; 0: torch's default")
    ap.add_argument(
        "--variants",
        default="dense,moe_balanced,moe_unbalanced",
        help="comma-separated runs of (b): dense, moe_balanced, moe_unbalanced",
    )
    ap.add_argument("--quality-only", action="store_true", help="skip (a)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the (b) run directories here")
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads or torch.get_num_threads())
    result: dict[str, object] = {}
    if not args.quality_only:
        result = throughput(args.tokens, args.rounds, D_MODEL)
        small = throughput(args.tokens, args.rounds, 128)  # the tiny preset's width
        result["tiny_width"] = {
            k: v for k, v in small.items() if k.startswith(("ratio", "d_", "hf_best"))
        }
        result["threads"] = torch.get_num_threads()
        result["throughput_seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({"throughput": result}))
        for k in ("ratio_vs_dense_active", "ratio_vs_hf_mixtral"):
            result[k] = round(float(result[k]), 3)  # type: ignore[arg-type]
    if not args.quick:
        variants = args.variants.split(",")
        result["quality"] = quality(args.steps, args.png, variants, args.keep)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
