"""Shared pieces of the RL objectives (PPO, GRPO): entropy, masked statistics and KL
estimators. Padding, masks and per-token log-probabilities are `lmlab.model.scoring`'s (they
serve evaluation too)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-position entropy of the next-token distribution [B, T-1]."""
    logp = F.log_softmax(logits[:, :-1].float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the masked entries (mean kept when shift_mean is False)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: str = "k1") -> Tensor:
    """Per-token estimate of KL(pi || ref) from log-probs of tokens sampled from pi
    (Schulman 2020, "Approximating KL divergence"): k1 = log r (unbiased, can be negative),
    k2 = (log r)^2 / 2, k3 = (r' - 1) - log r' with r' = ref/pi (unbiased and >= 0).
    All three are exactly 0 when the two policies agree."""
    log_ratio = logp - ref_logp
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {kind!r}; choose k1, k2 or k3")
