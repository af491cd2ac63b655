"""Shared pieces of the preference and RL objectives (PPO, DPO, GRPO) and of sequence scoring
(evaluation's gold log-likelihood): padding, per-token log-probs, masked statistics and KL
estimators.

Conventions: a batch row is `prompt + response` token ids [B, T]; `mask` [B, T-1] is 1 on the
positions whose *next* token is a response token (the tokens the policy chose), aligned with
`token_logprobs`, which scores token t+1 from the logits at t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def token_logprobs(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) for t in 0..T-2, in float32 -> [B, T-1].

    `temperature` divides the logits first: PPO must score tokens under the same distribution
    it sampled them from (a sampling temperature left out of the forward pass biases the ratio).
    """
    logits = logits[:, :-1].float() / temperature
    return torch.gather(F.log_softmax(logits, dim=-1), 2, ids[:, 1:, None]).squeeze(-1)


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


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids [B, T] and each row's length [B] (causal models ignore the padding)."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return ids, torch.tensor([len(r) for r in rows])


def response_mask(prompt_lens: Tensor, lengths: Tensor, width: int) -> Tensor:
    """[B, width - 1] mask aligned with `token_logprobs`: 1 where the next token is a response
    token (positions prompt_len - 1 .. length - 2)."""
    pos = torch.arange(width - 1)[None]
    return ((pos >= prompt_lens[:, None] - 1) & (pos < lengths[:, None] - 1)).float()


def sequence_logprobs(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Sum of the response tokens' log-probs per row [B] (mask from `response_mask`)."""
    return (token_logprobs(model(ids), ids) * mask).sum(-1)
