"""Group Relative Policy Optimization (Shao et al. 2024): advantages without a value model.

Each prompt gets a group of k sampled responses; a response's advantage is its reward minus the
group mean, divided by the group standard deviation, and applies to every token it generated.
"""

from __future__ import annotations

from torch import Tensor


def group_advantages(rewards: Tensor, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """rewards [G, k] (G prompts x k responses) -> advantages [G, k], zero-mean per group.

    With `scale` the advantages are divided by the group's std (0 when all rewards tie, so a
    group that is all right or all wrong teaches nothing, as it should)."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)
