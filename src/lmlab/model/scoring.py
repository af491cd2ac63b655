"""Scoring token sequences with a model: padding, per-token log-probabilities, response masks,
and values read at a position. Training objectives (DPO, PPO, GRPO, reward models), evaluation's
gold log-likelihood and reward-model scoring all use these, so they sit with the model, below
training.

Conventions: a batch row is `prompt + response` token ids [B, T]; `mask` [B, T-1] is 1 on the
positions whose *next* token is a response token (the tokens the policy chose), aligned with
`token_logprobs`, which scores token t+1 from the logits at t. Rows are built on the CPU and
moved to the model's device where they meet it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def model_device(model: nn.Module) -> torch.device:
    """The device a model's weights live on (where its inputs must go)."""
    return next(model.parameters()).device


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
    pos = torch.arange(width - 1, device=lengths.device)[None]
    return ((pos >= prompt_lens[:, None] - 1) & (pos < lengths[:, None] - 1)).float()


def token_logprobs(logits: Tensor, ids: Tensor, temperature: float = 1.0) -> Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) for t in 0..T-2, in float32 -> [B, T-1].

    `temperature` divides the logits first: PPO must score tokens under the same distribution
    it sampled them from (a sampling temperature left out of the forward pass biases the ratio).
    """
    logits = logits[:, :-1].float() / temperature
    return torch.gather(F.log_softmax(logits, dim=-1), 2, ids[:, 1:, None]).squeeze(-1)


def sequence_logprobs(model: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Sum of the response tokens' log-probs per row [B] (mask from `response_mask`)."""
    return (token_logprobs(model(ids), ids) * mask).sum(-1)


def gather_at(values: Tensor, last: Tensor) -> Tensor:
    """values[b, last[b]] for a [B, T] tensor."""
    return values.gather(1, last.long().unsqueeze(1)).squeeze(1)


@torch.no_grad()
def score_rows(model: nn.Module, rows: list[list[int]], pad_id: int, batch: int = 32) -> Tensor:
    """Scalar-head score of each token-id row, read at its last token ([N] float32, on the
    model's device, where the rows are sent)."""
    model.eval()
    device = model_device(model)
    out = []
    for i in range(0, len(rows), batch):
        ids, lengths = pad_rows(rows[i : i + batch], pad_id)
        out.append(gather_at(model(ids.to(device)), lengths.to(device) - 1).float())
    return torch.cat(out) if out else torch.zeros(0, device=device)
