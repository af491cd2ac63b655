"""Reward modelling: the Bradley-Terry objective on preference pairs (Christiano et al. 2017;
Ouyang et al. 2022).

P(chosen > rejected) = sigmoid(r(chosen) - r(rejected)); the loss is its negative log-likelihood.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def bradley_terry(r_chosen: Tensor, r_rejected: Tensor) -> tuple[Tensor, Tensor]:
    """(mean loss, accuracy) for reward pairs [B]; accuracy counts strict wins of `chosen`."""
    loss = -F.logsigmoid(r_chosen - r_rejected).mean()
    return loss, (r_chosen > r_rejected).float().mean()
