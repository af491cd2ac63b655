"""Muon for the hidden weight matrices and AdamW for everything else, as one optimizer.

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks"; the
optimizer of the modded-nanogpt speedruns and of nanochat) keeps a Nesterov momentum buffer per
matrix and replaces each update by the nearest semi-orthogonal matrix, U V^T of its SVD
U S V^T, approximated by a quintic Newton-Schulz iteration: every direction the gradient points
in moves by the same amount, so rare directions are not drowned by the dominant ones. Matrices
that several projections share (the fused q/k/v and gate/up weights) are orthogonalised one
projection at a time, as if they were separate layers. Embeddings, the output projection and
the norm gains are not hidden matrices; they get AdamW, as in both references.

The iteration runs in float32. `torch.optim.Muon` runs it in bfloat16, the right choice on GPUs;
this module exists for CPUs, where float32 is exact and the cost of a few small matmuls per
matrix is the same either way, and because one optimizer object must also carry the AdamW
groups (checkpoints store one optimizer state).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""(a, b, c) of the quintic x -> a x + b x^3 + c x^5 applied to the singular values (Jordan
et al. 2024: chosen for the steepest slope at zero; the values end in about [0.7, 1.2], not
exactly 1, which trains as well as the exact U V^T)."""
NS_STEPS = 5


def orthogonalize(g: Tensor, steps: int = NS_STEPS, eps: float = 1e-7) -> Tensor:
    """Approximately U V^T for g = U S V^T (float32; leading dimensions are a batch).

    After scaling g by its Frobenius norm (so every singular value is at most 1), each step maps
    X -> a X + b (X X^T) X + c (X X^T)^2 X, which applies the quintic to every singular value and
    leaves the singular vectors alone."""
    a, b, c = NS_COEFFICIENTS
    x = g.float()
    wide = x.shape[-2] <= x.shape[-1]
    if not wide:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.mT


def muon_update(g: Tensor, splits: tuple[int, ...] | None = None) -> Tensor:
    """The orthogonalised update of a matrix (or a batch of matrices) `g`, each block of rows
    in `splits` on its own, scaled by sqrt(max(1, rows / cols)) so that tall and wide blocks
    move their outputs by the same RMS (Jordan et al.'s scaling, torch's "original")."""
    blocks = g.split(list(splits), dim=-2) if splits else (g,)
    out = [
        orthogonalize(blk) * math.sqrt(max(1.0, blk.shape[-2] / blk.shape[-1])) for blk in blocks
    ]
    return torch.cat(out, dim=-2) if len(out) > 1 else out[0]


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer with Muon groups (`muon=True`) and AdamW groups.

    Group keys: `lr` (set by the training loop's schedule every step), `lr_scale` (this group's
    peak learning rate relative to the schedule's, so that Muon's and AdamW's learning rates
    follow one schedule), `weight_decay` (decoupled: p <- p (1 - lr wd)), and per kind
    `momentum`, `splits` (Muon: row blocks of each parameter, or None) or `betas`, `eps`
    (AdamW)."""

    def __init__(self, groups: Iterable[dict[str, Any]], lr: float) -> None:
        defaults = dict(
            lr=lr,
            lr_scale=1.0,
            weight_decay=0.0,
            muon=False,
            momentum=0.95,
            splits=None,
            betas=(0.9, 0.95),
            eps=1e-8,
        )
        super().__init__(list(groups), defaults)
        for group in self.param_groups:
            if group["splits"] is None:
                group["splits"] = [None] * len(group["params"])
            if group["muon"] and any(p.dim() < 2 for p in group["params"]):
                raise ValueError("Muon groups take only matrices (2 or more dimensions)")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("MuonAdamW does not take a closure")
        for group in self.param_groups:
            lr = group["lr"] * group["lr_scale"]
            if group["muon"]:
                self._muon(group, lr)
            else:
                self._adamw(group, lr)

    def _muon(self, group: dict[str, Any], lr: float) -> None:
        mu, wd = group["momentum"], group["weight_decay"]
        for p, splits in zip(group["params"], group["splits"], strict=True):
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            buf.mul_(mu).add_(p.grad)
            nesterov = p.grad.add(buf, alpha=mu)
            if wd:
                p.mul_(1 - lr * wd)
            p.add_(muon_update(nesterov, splits).to(p.dtype), alpha=-lr)

    def _adamw(self, group: dict[str, Any], lr: float) -> None:
        (b1, b2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.zeros(())
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t = int(state["step"])
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            if wd:
                p.mul_(1 - lr * wd)
            denom = (v / (1 - b2**t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - b1**t))
