"""The decoder-only transformer (RoPE, RMSNorm, SwiGLU, GQA) and its parameter/FLOP accounting.

One model class serves every phase: pretraining, SFT, reward/value models (a head on the same
trunk, `model/heads.py`) and inference. Inference plugs in through two optional arguments of
`Transformer.forward`: `positions` (per-row RoPE positions for ragged batches) and `cache` (any
object with the `KVCache.update` signature below, e.g. the engine's preallocated cache).

Layout follows Llama (Touvron et al. 2023): pre-norm blocks, RMSNorm (Zhang & Sennrich 2019),
rotary position embeddings in the "rotate half" convention (Su et al. 2021), SwiGLU feed-forward
(Shazeer 2020), grouped-query attention (Ainslie et al. 2023), no biases (but optional q/k/v
biases, `ModelConfig.qkv_bias`, as Qwen2 has; Bai et al. 2023). The q/k/v and the
gate/up projections are fused into one matrix each so a block runs two fewer matmul calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.config import ModelConfig
from lmlab.model.layers import SwiGLU
from lmlab.model.moe import MoE


class KVCache(Protocol):
    """What attention needs from a key/value cache.

    `update` stores the new keys/values of `layer` (shape [B, H_kv, T_new, D]) and returns the
    keys/values to attend over plus an attention mask broadcastable to [B, H, T_new, T_all]
    (True = may attend), or None when plain causal attention over the returned keys is right.
    `attend` may instead do both for a one-token step (q [B, H, 1, D]): store the keys/values
    and return the attention output [B, H, 1, D] (with a fused kernel); None means it does not,
    and attention calls `update`.
    """

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor | None]: ...

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor | None: ...


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin tables of shape [length, head_dim // 2] (float32)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x_i, x_{i+D/2}) of x [B, T, H, D] by the angles in cos/sin [B|1, T, 1, D/2]."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Attention(nn.Module):
    """Causal self-attention with RoPE and grouped-query heads through SDPA."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head, self.n_kv, self.head_dim = cfg.n_head, cfg.kv_heads, cfg.head_dim
        qkv_out = (self.n_head + 2 * self.n_kv) * self.head_dim
        self.wqkv = nn.Linear(cfg.d_model, qkv_out, bias=cfg.qkv_bias)
        self.wo = nn.Linear(self.n_head * self.head_dim, cfg.d_model, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None) -> Tensor:
        B, T, _ = x.shape
        hd, nq = self.head_dim, self.n_head
        qkv = self.wqkv(x).view(B, T, nq + 2 * self.n_kv, hd)
        # one RoPE call rotates the query and key heads together (they are adjacent in wqkv)
        qk = apply_rope(qkv[:, :, : nq + self.n_kv], cos, sin)
        q = qk[:, :, :nq].transpose(1, 2)
        k = qk[:, :, nq:].transpose(1, 2)
        v = qkv[:, :, nq + self.n_kv :].transpose(1, 2)
        mask = None
        if cache is not None:
            if T == 1 and (y := cache.attend(self.layer, q, k, v)) is not None:
                return self.wo(y.transpose(1, 2).reshape(B, T, self.n_head * hd))
            k, v, mask = cache.update(self.layer, k, v)
        if self.n_kv != self.n_head:
            # Expanding K/V explicitly keeps SDPA on its fused kernels on every backend;
            # `enable_gqa=True` falls back to the math path on CPU.
            rep = self.n_head // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)
        elif T == 1:
            # One query per row (cached decoding): three small matmuls, which torch.compile
            # fuses, cost a fraction of the CPU flash kernel's per-call setup with a mask.
            scores = (q @ k.transpose(-1, -2)) * hd**-0.5
            y = scores.masked_fill(~mask, -float("inf")).softmax(-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_head * hd))


def make_ffn(cfg: ModelConfig, layer: int) -> nn.Module:
    """The feed-forward module of block `layer` (the hook where MoE layers plug in)."""
    if cfg.moe.is_moe_layer(layer):
        return MoE(cfg, layer)
    return SwiGLU(cfg.d_model, cfg.ffn_dim)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.ffn = make_ffn(cfg, layer)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, cache: KVCache | None = None) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin, cache)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """Decoder-only language model: token ids [B, T] -> next-token logits [B, T, V]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        # Token smearing (cfg.smear): x_t = e(tok_t) + smear * e(tok_{t-1}); zero at init.
        self.smear = nn.Parameter(torch.zeros(cfg.d_model)) if cfg.smear else None
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layer))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.context_length, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, init_std) everywhere; the projections that write into the residual
        stream (attention `wo`, FFN `w2`, stacked MoE experts `ffn.w2`) scaled by
        1/sqrt(2 * n_layer) so the residual variance stays O(1) with depth (Radford et al. 2019).
        RMSNorm gains start at 1, biases at 0."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if name == "smear" or name.endswith(".bias"):
                nn.init.zeros_(p)
            elif p.dim() < 2:
                nn.init.ones_(p)
            elif name.endswith(("wo.weight", "w2.weight", "ffn.w2")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)

    def embed_tokens(self, idx: Tensor, prev: Tensor | None = None) -> Tensor:
        """Input embeddings [B, T, d_model]. With token smearing, each token also gets the gated
        embedding of the token before it: `idx`'s own previous column, and for the first column
        `prev` [B] (the token just before `idx` in its sequence; None: `idx` starts it)."""
        x = self.embed(idx)
        if self.smear is None:
            return x
        before = self.embed(idx[:, :-1])
        first = self.embed(prev)[:, None] if prev is not None else torch.zeros_like(x[:, :1])
        return x + self.smear * torch.cat((first, before), dim=1)

    def hidden_states(
        self,
        idx: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        prev: Tensor | None = None,
    ) -> Tensor:
        """Final-norm hidden states [B, T, d_model] (what value/reward heads read).
        prev: [B] the token before `idx[:, 0]` (only read by token-smearing models)."""
        T = idx.shape[1]
        if positions is None:
            if self.cfg.context_length < T:
                raise ValueError(f"sequence length {T} > context {self.cfg.context_length}")
            cos = self.rope_cos[:T][None, :, None]
            sin = self.rope_sin[:T][None, :, None]
        else:
            cos = self.rope_cos[positions][:, :, None]
            sin = self.rope_sin[positions][:, :, None]
        x = self.embed_tokens(idx, prev)
        for block in self.blocks:
            x = block(x, cos, sin, cache)
        return self.norm(x)

    def forward(
        self,
        idx: Tensor,
        positions: Tensor | None = None,
        cache: KVCache | None = None,
        prev: Tensor | None = None,
    ) -> Tensor:
        """Logits for token ids `idx` [B, T].

        positions: [B, T] absolute positions (default 0..T-1 for every row).
        cache: a KV cache; when given, attention covers the cached tokens plus `idx`.
        prev: [B] the token before `idx[:, 0]` when decoding with a cache (token smearing).
        """
        return self.lm_head(self.hidden_states(idx, positions, cache, prev))


# --- accounting -----------------------------------------------------------------------------


def _qkv_bias(cfg: ModelConfig) -> int:
    """Parameters of one layer's q/k/v biases (0 without them)."""
    return (cfg.n_head + 2 * cfg.kv_heads) * cfg.head_dim if cfg.qkv_bias else 0


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameter counts from the config alone: total, embedding, non-embedding, and the
    `active` / `active_non_embedding` counts one token uses (equal to total / non-embedding
    for dense models; an MoE layer activates its router, top_k routed and all shared experts).

    `embedding` is the token embedding plus, when untied, the output projection (Kaplan et al.
    2020 exclude both); `non_embedding` is everything else (attention, FFN, norms, biases).
    """
    d, hd, m = cfg.d_model, cfg.head_dim, cfg.moe
    attn = d * (cfg.n_head + 2 * cfg.kv_heads) * hd + cfg.n_head * hd * d + _qkv_bias(cfg)
    dense_ffn = 3 * d * cfg.ffn_dim
    n_moe = sum(m.is_moe_layer(i) for i in range(cfg.n_layer))
    expert = 3 * d * cfg.expert_dim
    moe_total = d * m.n_experts + (m.n_experts + m.n_shared) * expert
    moe_active = d * m.n_experts + (m.top_k + m.n_shared) * expert
    base = cfg.n_layer * (attn + 2 * d) + (cfg.n_layer - n_moe) * dense_ffn + d
    base += d if cfg.smear else 0  # the smearing gate
    non_embedding = base + n_moe * moe_total
    active_non_embedding = base + n_moe * moe_active
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return {
        "total": non_embedding + embedding,
        "embedding": embedding,
        "non_embedding": non_embedding,
        "active": active_non_embedding + embedding,
        "active_non_embedding": active_non_embedding,
    }


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> dict[str, float]:
    """Training FLOPs per token: 6 * N_matmul + 12 * L * T * d_attn (PaLM, Chowdhery et al. 2022).

    N_matmul counts the weights used in matrix multiplies: every block weight plus the output
    projection (tied or not: the lm head matmul runs either way); the input embedding is a
    lookup and costs no FLOPs. For MoE models only the active weights count (router, top_k
    routed and the shared experts); `n_matmul_total` counts every expert. The attention term
    counts QK^T and AV over the full T x T score matrix (as PaLM and Chinchilla do), for
    sequences of length T = seq_len (default: the context). `forward` is one third of `train`.
    """
    T = seq_len or cfg.context_length
    counts = param_counts(cfg)
    # what is added or scaled, not multiplied: norm gains, the smear gate, q/k/v biases
    norms = (2 * cfg.n_layer + 1 + int(cfg.smear)) * cfg.d_model + cfg.n_layer * _qkv_bias(cfg)
    n_matmul = counts["active_non_embedding"] - norms + cfg.vocab_size * cfg.d_model
    n_matmul_total = counts["non_embedding"] - norms + cfg.vocab_size * cfg.d_model
    attn = 12 * cfg.n_layer * T * cfg.n_head * cfg.head_dim
    train = 6 * n_matmul + attn
    return {
        "train": float(train),
        "forward": train / 3.0,
        "n_matmul": float(n_matmul),
        "n_matmul_total": float(n_matmul_total),
    }


@dataclass(frozen=True)
class FlopModel:
    """Forward FLOPs of inference requests: 2 * n_matmul per token run through the model plus
    causal attention over the keys each token actually attends to (prefill and decode)."""

    n_matmul: float = 0.0
    attn_per_key: float = 0.0
    """4 * n_layer * d_attn: QK^T and AV FLOPs per (query token, key) pair."""

    @classmethod
    def of(cls, engine: Any) -> FlopModel:
        """The FLOP model of whatever runs a model of `engine.cfg` (zero without a config: a
        scripted engine in tests)."""
        cfg = getattr(engine, "cfg", None)
        if cfg is None:
            return cls()
        return cls(flops_per_token(cfg)["n_matmul"], 4.0 * cfg.n_layer * cfg.n_head * cfg.head_dim)

    def request(self, prompt_len: int, generated: Sequence[int]) -> float:
        """FLOPs of one request: the prompt prefilled once, then each sample's decode steps (the
        last token sampled is never fed back)."""
        p = prompt_len
        flops = 2 * self.n_matmul * p + self.attn_per_key * p * (p + 1) / 2
        for g in generated:
            steps = max(g - 1, 0)  # token i (i >= 1) is decoded at position p + i - 1
            flops += 2 * self.n_matmul * steps + self.attn_per_key * (
                steps * (p + 1) + steps * (steps - 1) / 2
            )
        return flops


def accounting_rows(cfg: ModelConfig) -> list[tuple[str, str]]:
    """The shape, parameter counts and FLOPs per token of a model config as (label, value)
    rows (what `lmlab info` prints); MoE models add the expert layout and active counts."""
    counts = param_counts(cfg)
    flops = flops_per_token(cfg)
    rows = [
        (
            "layers / d_model / heads (kv)",
            f"{cfg.n_layer} / {cfg.d_model} / {cfg.n_head} ({cfg.kv_heads})",
        ),
        ("context / vocab / d_ff", f"{cfg.context_length} / {cfg.vocab_size} / {cfg.ffn_dim}"),
        ("params total", f"{counts['total']:,}"),
        ("params non-embedding", f"{counts['non_embedding']:,}"),
        ("params embedding", f"{counts['embedding']:,}"),
    ]
    m = cfg.moe
    if m.n_experts:
        n_moe = sum(m.is_moe_layer(i) for i in range(cfg.n_layer))
        rows += [
            (
                "MoE experts / top-k / shared / d_exp",
                f"{m.n_experts} / {m.top_k} / {m.n_shared} / {cfg.expert_dim}"
                f"  ({n_moe} of {cfg.n_layer} blocks)",
            ),
            ("params active", f"{counts['active']:,}  ({counts['active'] / counts['total']:.1%})"),
            ("params active non-embedding", f"{counts['active_non_embedding']:,}"),
        ]
    active = ", N active" if m.n_experts else ""
    rows += [
        ("train FLOPs / token", f"{flops['train']:.4g}  (6N + 12·L·T·d_attn{active})"),
        ("forward FLOPs / token", f"{flops['forward']:.4g}"),
    ]
    return rows
