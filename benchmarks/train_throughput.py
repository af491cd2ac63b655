"""Training throughput: lmlab vs HF transformers' Llama at the same shape, and MFU vs the
machine's measured fp32 matmul peak, all in one run.

    python benchmarks/train_throughput.py [--steps 20] [--no-compile]

Reference shape (issue 2): d_model 256, 6 layers, 8 heads, context 256, batch 16, vocab 4096.
Both models run the same work per step: forward, float32 cross-entropy, backward, AdamW step.
lmlab is timed eager and with `torch.compile` (its `--train.compile` option); HF is timed as
users run it, eager with SDPA attention. The headline `tokens_per_s` is lmlab's faster mode.
The last output line is one JSON object: matmul_gflops, tokens_per_s, mfu, hf_tokens_per_s,
ratio_vs_hf (plus the eager figures).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from lmlab.config import ModelConfig, TrainConfig
from lmlab.model.transformer import Transformer, flops_per_token
from lmlab.train.loop import make_optimizer

SHAPE = ModelConfig(vocab_size=4096, context_length=256, n_layer=6, n_head=8, d_model=256)
BATCH = 16


def matmul_peak_gflops(seconds: float = 3.0) -> float:
    """Best fp32 GEMM throughput over a few square sizes (the machine's practical peak)."""
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            a @ b
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    return best


def time_steps(step: Callable[[], None], steps: int, warmup: int = 3) -> float:
    """Seconds per step, median of `steps` timed steps after `warmup` untimed ones."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def lmlab_step(compile_model: bool) -> Callable[[], None]:
    torch.manual_seed(0)
    model = Transformer(SHAPE)
    opt = make_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    fwd = torch.compile(model) if compile_model else model
    x = torch.randint(0, SHAPE.vocab_size, (BATCH, SHAPE.context_length + 1))

    def step() -> None:
        logits = fwd(x[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def hf_step(compile_model: bool) -> Callable[[], None]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=SHAPE.vocab_size,
        hidden_size=SHAPE.d_model,
        intermediate_size=SHAPE.ffn_dim,
        num_hidden_layers=SHAPE.n_layer,
        num_attention_heads=SHAPE.n_head,
        num_key_value_heads=SHAPE.kv_heads,
        max_position_embeddings=SHAPE.context_length,
        tie_word_embeddings=True,
        rms_norm_eps=SHAPE.norm_eps,
        attention_bias=False,
        mlp_bias=False,
    )
    model = LlamaForCausalLM(cfg)
    model.config._attn_implementation = "sdpa"
    model.train()
    opt = make_optimizer(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    fwd = torch.compile(model) if compile_model else model
    x = torch.randint(0, SHAPE.vocab_size, (BATCH, SHAPE.context_length + 1))

    def step() -> None:
        logits = fwd(input_ids=x[:, :-1]).logits
        loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile timing")
    args = ap.parse_args()

    tokens = BATCH * SHAPE.context_length
    fpt = flops_per_token(SHAPE)["train"]
    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s  ({torch.get_num_threads()} threads)")
    eager = tokens / time_steps(lmlab_step(False), args.steps)
    print(f"lmlab eager:    {eager:,.0f} tokens/s  ({fpt / 1e6:.1f} MFLOP/token)")
    compiled = 0.0
    if not args.no_compile:
        compiled = tokens / time_steps(lmlab_step(True), args.steps)
        print(f"lmlab compiled: {compiled:,.0f} tokens/s")
    hf = tokens / time_steps(hf_step(False), args.steps)
    peak = max(peak, matmul_peak_gflops())  # re-measured: a busy machine moves the peak
    ours = max(eager, compiled)
    mfu = ours * fpt / (peak * 1e9)
    print(f"HF LlamaForCausalLM (eager, sdpa): {hf:,.0f} tokens/s")
    print(f"fp32 matmul peak (best of two): {peak:.1f} GFLOP/s")
    print(
        f"lmlab best: {ours:,.0f} tokens/s = {ours / hf:.2f}x HF, MFU {100 * mfu:.1f}% "
        f"(eager {eager / hf:.2f}x HF, MFU {100 * eager * fpt / (peak * 1e9):.1f}%)"
    )
    print(
        json.dumps(
            {
                "matmul_gflops": round(peak, 1),
                "tokens_per_s": round(ours, 1),
                "mfu": round(mfu, 4),
                "hf_tokens_per_s": round(hf, 1),
                "ratio_vs_hf": round(ours / hf, 3),
                "eager_tokens_per_s": round(eager, 1),
                "eager_ratio_vs_hf": round(eager / hf, 3),
                "eager_mfu": round(eager * fpt / (peak * 1e9), 4),
                "train_flops_per_token": fpt,
            }
        )
    )


if __name__ == "__main__":
    main()
