"""Text generation from a trained model."""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
) -> list[int]:
    """Sample a continuation of `prompt` token by token (full forward each step)."""
    ctx = model.cfg.context_length
    if len(prompt) + max_new_tokens > ctx:
        raise ValueError(
            f"prompt ({len(prompt)} tokens) + max_new_tokens ({max_new_tokens}) exceeds the "
            f"context length {ctx}"
        )
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    for _ in range(max_new_tokens):
        logits: Tensor = model(ids)[0, -1].float().cpu()
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = -float("inf")
            nxt = int(torch.multinomial(logits.softmax(-1), 1, generator=gen))
        ids = torch.cat([ids, torch.tensor([[nxt]], device=device)], dim=1)
    return ids[0, len(prompt) :].tolist()
