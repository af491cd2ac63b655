"""Direct Preference Optimization (Rafailov et al. 2023): the loss.

L = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]),
with sequence log-probs summed over response tokens and the reference's precomputed once.
At initialisation (pi == ref) the loss is exactly log 2.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def dpo_loss(
    chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float = 0.1
) -> tuple[Tensor, dict[str, float]]:
    """Mean DPO loss over pairs of sequence log-probs [B], and its implicit-reward metrics."""
    r_w = beta * (chosen - ref_chosen)
    r_l = beta * (rejected - ref_rejected)
    loss = -F.logsigmoid(r_w - r_l).mean()
    return loss, {
        "reward_margin": float((r_w - r_l).mean()),
        "reward_accuracy": float((r_w > r_l).float().mean()),
    }
