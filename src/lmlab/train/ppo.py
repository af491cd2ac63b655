"""PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022; the "N implementation
details of RLHF with PPO", Huang et al. 2024): the objective's pieces.

Per-token reward = -beta * KL(pi || ref) at every response token, plus the reward model's score
at the last token. Advantages by GAE (gamma 1, lambda 0.95) against a value model, whitened over
the batch; the policy loss is PPO's clipped surrogate, the value loss is clipped around the
rollout's values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lmlab.train.rl import masked_mean, masked_whiten


def per_token_rewards(score: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """[B, T] rewards: -beta * kl on response tokens, plus `score` [B] at each row's last one."""
    rewards = -beta * kl * mask
    last = mask.long().cumsum(1).argmax(1)  # index of the last response token per row
    rewards[torch.arange(len(score)), last] += score
    return rewards


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over the masked positions.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lambda * A_{t+1}, with
    V = 0 after the last response token. Returns (advantages, returns = advantages + values).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    T = values.shape[1]
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


@dataclass
class PolicyLossOut:
    loss: Tensor
    clipfrac: Tensor
    approx_kl: Tensor


def policy_loss(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, clip: float = 0.2
) -> PolicyLossOut:
    """PPO's clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps))."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask)
    return PolicyLossOut(loss, clipfrac, approx_kl)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Clipped value loss 0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2) and its clipfrac."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    a, b = (values - returns) ** 2, (clipped - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(a, b), mask), masked_mean((b > a).float(), mask)


def whiten_advantages(adv: Tensor, mask: Tensor) -> Tensor:
    return masked_whiten(adv, mask) * mask


@dataclass
class AdaptiveKL:
    """Adaptive KL coefficient (Ziegler et al. 2019): beta moves so the observed KL tracks
    `target`, by at most 20% per `horizon` samples; `target=None` keeps beta fixed."""

    beta: float = 0.05
    target: float | None = 6.0
    horizon: int = 10000

    def update(self, kl: float, n_samples: int) -> float:
        if self.target is not None:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.beta *= 1 + error * n_samples / self.horizon
        return self.beta
