"""A scalar head on the one transformer trunk: reward models and PPO value models.

Policy, reference, reward and value models are all `Transformer`s; reward and value models add
one linear map from the final hidden state to a scalar per position. The reward of a response
is read at its last token (the `<|end|>` that closes the assistant turn).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lmlab.model.scoring import gather_at
from lmlab.model.transformer import KVCache, Transformer


class ScalarHeadModel(nn.Module):
    """`trunk.hidden_states` -> Linear(d_model, 1): one scalar per position [B, T]."""

    def __init__(self, trunk: Transformer) -> None:
        super().__init__()
        self.trunk = trunk
        self.cfg = trunk.cfg
        self.head = nn.Linear(trunk.cfg.d_model, 1)
        # Small init: the head starts near 0 so early Bradley-Terry gradients flow to the trunk.
        nn.init.normal_(self.head.weight, 0.0, 1.0 / (trunk.cfg.d_model + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    def forward(
        self, idx: Tensor, positions: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        return self.head(self.trunk.hidden_states(idx, positions, cache)).squeeze(-1).float()

    def score(self, idx: Tensor, last: Tensor) -> Tensor:
        """Scalar at position `last[b]` of each row b (e.g. the response's final token)."""
        return gather_at(self(idx), last)


@torch.no_grad()
def normalise_reward(model: ScalarHeadModel, mean: float, std: float) -> None:
    """Fold r -> (r - mean) / std into the head, so that responses whose rewards had this mean
    and std now score mean 0 and std 1 (Ziegler et al. 2019 normalise the reward model this way
    on samples of the initial policy; Huang et al. 2024 follow them). The gain 1/std and the
    shift live in the head's own weight and bias, so the checkpoint format is unchanged: a run
    saved when only the mean was removed loads as one whose gain is 1. A std of (almost) 0 has
    no gain that could make it 1, so only the mean is removed then."""
    gain = 1.0 / std if std > 1e-6 else 1.0
    model.head.bias.sub_(mean).mul_(gain)
    model.head.weight.mul_(gain)
