"""Per-problem evaluation metrics: exact match and continuous ones.

Exact match is all-or-nothing; the continuous metrics give partial credit so that progress shows
before answers become fully right (Schaeffer et al. 2023, "Are emergent abilities a mirage?"):
per-character accuracy (right-aligned per-digit accuracy for numbers), normalised edit distance,
and the log-likelihood the model gives the gold response (teacher forcing, no generation).
"""

from __future__ import annotations

import torch
from torch import nn

from lmlab.model.scoring import pad_rows, response_mask, sequence_logprobs


def exact_match(pred: str, gold: str) -> float:
    """1.0 if the (already normalised) strings are equal, else 0.0."""
    return float(pred == gold)


def char_accuracy(pred: str, gold: str, right_align: bool = False) -> float:
    """Fraction of positions where `pred` and `gold` agree, over the longer length.

    `right_align` compares from the last character (per-digit accuracy of numbers: units with
    units, tens with tens). Two empty strings agree fully.
    """
    n = max(len(pred), len(gold))
    if n == 0:
        return 1.0
    if right_align:
        pred, gold = pred.rjust(n, "\0"), gold.rjust(n, "\0")
    return sum(a == b for a, b in zip(pred, gold, strict=False)) / n


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalized_edit_distance(pred: str, gold: str) -> float:
    """Edit distance divided by the longer length: 0 for equal strings, 1 for nothing shared."""
    n = max(len(pred), len(gold))
    return edit_distance(pred, gold) / n if n else 0.0


@torch.no_grad()
def gold_logprobs(
    model: nn.Module, prompts: list[list[int]], golds: list[list[int]], batch_size: int = 32
) -> list[float | None]:
    """Total log-probability (nats) of each gold continuation given its prompt, by one teacher-
    forced forward pass per batch; None where prompt + gold exceed the model's context."""
    context = model.cfg.context_length
    device = next(model.parameters()).device
    out: list[float | None] = [None] * len(prompts)
    todo = [
        i for i in range(len(prompts)) if golds[i] and len(prompts[i]) + len(golds[i]) <= context
    ]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        ids, lengths = pad_rows([prompts[i] + golds[i] for i in chunk], pad_id=0)
        mask = response_mask(torch.tensor([len(prompts[i]) for i in chunk]), lengths, ids.shape[1])
        totals = sequence_logprobs(model, ids.to(device), mask.to(device)).cpu()
        for i, total in zip(chunk, totals.tolist(), strict=True):
            out[i] = total
    return out
