"""Mixture-of-Experts feed-forward layer: router, experts, dropless dispatch, balancing, stats.

A `MoE` module replaces the dense SwiGLU of a block when `ModelConfig.moe.n_experts > 0`
(`transformer.make_ffn`); the model class stays the same. Per token (Shazeer et al. 2017;
Fedus et al. 2022 "Switch"; Jiang et al. 2024 "Mixtral"; DeepSeek-AI 2024 "DeepSeek-V3"):

    logits = x W_r                                  router, always in float32
    s      = softmax(logits) | sigmoid(logits)      scores
    chosen = top-k of (s + b)                       b: aux-loss-free bias, selection only
    g      = s[chosen] (/ sum s[chosen])            gate weights, optionally renormalised
    y      = sum_j g_j * E_j(x) + shared(x)         SwiGLU experts, optional always-on shared ones

Dispatch is dropless: the (token, expert) assignments are sorted by expert so each expert's
tokens form one contiguous slice, both expert matmuls run as one grouped matmul over those
slices (`torch._grouped_mm` where it runs for the dtype/device, else a loop over the slices),
and results are scattered back with `index_add`. Expert weights are stacked tensors
`w13 [E, d, 2h]` (gate and up projections fused) and `w2 [E, h, d]`.

Balancing, each switchable in `MoEConfig`: the Switch auxiliary loss alpha * N * sum_i f_i P_i,
the ST-MoE router z-loss (Zoph et al. 2022), and the DeepSeek-V3 auxiliary-loss-free bias b,
which moves once per optimiser step from the load of that step's whole batch (DeepSeek-V3
§2.1.2 monitors the load per step and updates the bias at its end). Training forwards
(training mode with gradients enabled) only add their expert counts to the layer's
`step_counts`; `update_balance_bias(model)`, which the training loop calls after the optimiser
step (having dropped stale counts with `clear_balance_counts` when the step began), sums those
counts over the data-parallel ranks and moves every bias by bias_speed * sign(mean load -
load_i) outside autograd. So gradient-accumulation micro-batches, a second forward in one
objective and data-parallel ranks all feed one update from the step's global load, and the
replicated bias stays identical on every rank. An optional capacity factor drops assignments
beyond an expert's capacity in training (Switch style, for comparison); evaluation and
inference (eval mode, no_grad, inference_mode) are always dropless and neither count nor move
the bias, so a token's output never depends on the rest of its batch.

After each forward a layer keeps its `RoutingStats` in `.stats` and its weighted balancing
losses (with gradients) in `.aux_losses`; `router_losses` and `routing_metrics` collect them
for the training objective.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lmlab.config import ModelConfig
from lmlab.model.layers import SwiGLU

GemmImpl = Literal["auto", "grouped_mm", "loop"]


# --- grouped matmul ---------------------------------------------------------------------------


def _grouped_mm_ok(x: Tensor, w: Tensor) -> bool:
    """Whether `torch._grouped_mm` runs for these operands: CUDA bf16 on sm80+, CPU float32/bf16,
    with 16-byte aligned pointers and strides (its kernels require both); under torch.compile
    only bf16 (inductor lowers no other dtype)."""
    if not hasattr(torch, "_grouped_mm") or x.dtype != w.dtype:
        return False
    if torch.compiler.is_compiling() and x.dtype != torch.bfloat16:
        return False
    if x.device.type == "cuda":
        if x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device) < (8, 0):
            return False
    elif x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    size = x.element_size()
    return all(
        t.data_ptr() % 16 == 0 and all(s * size % 16 == 0 for s in t.stride()[:-1]) for t in (x, w)
    )


class _LoopGroupedMM(torch.autograd.Function):
    """Grouped matmul as one plain matmul per contiguous slice, with a hand-written backward
    (autograd through slice assignments would copy the whole gradient once per expert)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, counts: list[int]) -> Tensor:
        out = x.new_empty(x.shape[0], w.shape[-1])
        start = 0
        for e, n in enumerate(counts):
            if n:
                torch.mm(x[start : start + n], w[e], out=out[start : start + n])
            start += n
        ctx.save_for_backward(x, w)
        ctx.counts = counts
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        x, w = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x, grad_w = torch.empty_like(x), torch.zeros_like(w)
        start = 0
        for e, n in enumerate(ctx.counts):
            if n:
                rows = slice(start, start + n)
                torch.mm(grad[rows], w[e].t(), out=grad_x[rows])
                torch.mm(x[rows].t(), grad[rows], out=grad_w[e])
            start += n
        return grad_x, grad_w, None


def grouped_mm(x: Tensor, w: Tensor, counts: Tensor, impl: GemmImpl = "auto") -> Tensor:
    """Rows of `x` [S, K] in consecutive groups of `counts` [E] rows, group e times `w[e]` [K, N].

    Returns [S, N]. 'grouped_mm' is one `torch._grouped_mm` call; 'loop' multiplies each
    contiguous slice separately (correct everywhere); 'auto' picks the first when it runs.
    """
    x = x.contiguous()
    if impl == "grouped_mm" or (impl == "auto" and _grouped_mm_ok(x, w)):
        offs = counts.cumsum(0).to(torch.int32)
        return torch._grouped_mm(x, w, offs=offs)
    return _LoopGroupedMM.apply(x, w, counts.tolist())


# --- routing statistics -----------------------------------------------------------------------


@dataclass
class RoutingStats:
    """What one MoE layer's router did in one forward (detached tensors)."""

    counts: Tensor
    """[E] assignments chosen per expert (before any capacity drop)."""
    dropped: Tensor
    """Fraction of assignments dropped by the capacity limit (0 when dropless)."""
    entropy: Tensor
    """Mean over tokens of the entropy (nats) of the routing distribution (max ln E)."""
    aux_loss: Tensor
    """Switch auxiliary loss as added to the objective (alpha-weighted)."""
    z_loss: Tensor
    """Router z-loss as added to the objective (coefficient-weighted)."""

    @property
    def load(self) -> Tensor:
        """[E] fraction of assignments per expert (sums to 1)."""
        return self.counts / self.counts.sum().clamp(min=1)


def load_balance(counts: Tensor) -> dict[str, float]:
    """Coefficient of variation and MaxVio of per-expert loads.

    CV = std/mean over experts (0 when perfectly balanced); MaxVio = (max - mean) / mean
    (Wang et al. 2024, "Auxiliary-loss-free load balancing"), the overload of the busiest expert.
    """
    c = counts.double()
    mean = c.mean().clamp(min=1e-12)
    return {
        "cv": float(c.std(unbiased=False) / mean),
        "maxvio": float((c.max() - mean) / mean),
    }


# --- the layer --------------------------------------------------------------------------------


class MoE(nn.Module):
    """Sparse SwiGLU feed-forward: top-k routed experts plus optional shared experts."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        m = cfg.moe
        self.cfg, self.layer = m, layer
        d, h, E = cfg.d_model, cfg.expert_dim, m.n_experts
        self.n_experts, self.top_k, self.d_expert = E, m.top_k, h
        self.router = nn.Linear(d, E, bias=False)
        self.w13 = nn.Parameter(torch.empty(E, d, 2 * h))
        self.w2 = nn.Parameter(torch.empty(E, h, d))
        # n_shared always-on experts of hidden h are one SwiGLU of hidden n_shared * h.
        self.shared = SwiGLU(d, m.n_shared * h) if m.n_shared else None
        # DeepSeek-V3 selection bias: a buffer (saved with the weights), never a parameter.
        self.register_buffer("expert_bias", torch.zeros(E))
        # [E] assignments of the training forwards since the last `update_balance_bias`.
        # A plain attribute, not a buffer: it is per-rank state within one step (DDP would
        # overwrite buffers with rank 0's at every forward) and no part of a checkpoint, which
        # is taken at a step boundary where it is empty.
        self.step_counts: Tensor | None = None
        self.gemm: GemmImpl = "auto"
        self.stats: RoutingStats | None = None
        self.aux_losses: Tensor | None = None
        nn.init.normal_(self.w13, 0.0, cfg.init_std)
        nn.init.normal_(self.w2, 0.0, cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Router for tokens x [N, d]: (logits [N, E] float32, probs [N, E] summing to 1,
        chosen experts [N, k], gate weights [N, k] float32)."""
        logits = F.linear(x.float(), self.router.weight.float())
        if self.cfg.score == "softmax":
            scores = logits.softmax(-1)
            probs = scores
        else:
            scores = logits.sigmoid()
            probs = scores / scores.sum(-1, keepdim=True)
        # The bias steers which experts are chosen, never how much they weigh (DeepSeek-V3).
        chosen = torch.topk(scores.detach() + self.expert_bias, self.top_k, dim=-1).indices
        gates = scores.gather(-1, chosen)
        if self.cfg.renormalize:
            gates = gates / gates.sum(-1, keepdim=True).clamp(min=1e-20)
        return logits, probs, chosen, gates

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        N, E, k = x.shape[0], self.n_experts, self.top_k
        logits, probs, chosen, gates = self.route(x)

        # Sort the N*k assignments by expert (stable: within an expert, token order).
        flat = chosen.flatten()
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=E)
        kept = counts
        dropped = x.new_zeros((), dtype=torch.float32)
        cf = self.cfg.capacity_factor
        if self.training and cf is not None:
            # Switch: each expert takes at most ceil(cf * N * k / E) assignments, the earliest
            # tokens first; the rest contribute nothing (the residual carries those tokens).
            capacity = math.ceil(cf * N * k / E)
            starts = counts.cumsum(0) - counts
            rank = torch.arange(N * k, device=x.device) - starts[flat[order]]
            order = order[rank < capacity]
            kept = counts.clamp(max=capacity)
            dropped = x.new_tensor(1.0 - order.numel() / (N * k), dtype=torch.float32)
        # The grouped matmul is outside autocast's reach: cast to the autocast dtype by hand.
        dev = x.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype
        token = order // k
        xs = x[token].to(dtype)
        gate_up = grouped_mm(xs, self.w13.to(dtype), kept, self.gemm)
        g, u = gate_up.chunk(2, dim=-1)
        ys = grouped_mm(F.silu(g) * u, self.w2.to(dtype), kept, self.gemm)
        ys = ys * gates.flatten()[order].unsqueeze(-1).to(ys.dtype)
        out = torch.zeros_like(x, dtype=ys.dtype).index_add_(0, token, ys)
        if self.shared is not None:
            out = out + self.shared(x)

        self._balance(logits, probs, counts, dropped)
        return out.to(x.dtype).reshape(shape)

    def _balance(self, logits: Tensor, probs: Tensor, counts: Tensor, dropped: Tensor) -> None:
        """Balancing losses, statistics and (in training) the counts the bias update uses."""
        if self.training and torch.is_grad_enabled() and self.cfg.bias_speed > 0:
            # Only forwards that train count: no_grad scoring in training mode (and eval, the
            # engine) must not steer the bias. `update_balance_bias` applies and clears them.
            c = counts.detach()
            self.step_counts = c if self.step_counts is None else self.step_counts + c
        E, k = self.n_experts, self.top_k
        N = logits.shape[0]
        # Switch (Fedus et al. 2022, eq. 4) generalised to top-k: f_i = share of the N*k
        # assignments routed to i, P_i = mean router probability of i; equals alpha at uniform.
        f = counts.float() / max(1, N * k)
        P = probs.mean(0)
        aux = self.cfg.aux_loss * E * (f * P).sum()
        z = self.cfg.z_loss * torch.logsumexp(logits, -1).square().mean()
        self.aux_losses = aux + z
        with torch.no_grad():
            entropy = -(probs * probs.clamp(min=1e-20).log()).sum(-1).mean()
            self.stats = RoutingStats(
                counts.detach().float(), dropped.detach(), entropy, aux.detach(), z.detach()
            )


# --- collecting losses and metrics for an objective --------------------------------------------


def moe_layers(model: nn.Module) -> list[MoE]:
    """The MoE layers of a model (also through DDP / torch.compile wrappers), in block order."""
    return sorted((m for m in model.modules() if isinstance(m, MoE)), key=lambda m: m.layer)


def clear_balance_counts(model: nn.Module) -> None:
    """Forget the load counted by training forwards since the last bias update (a forward no
    optimiser step followed must not steer the next step's update)."""
    for m in moe_layers(model):
        m.step_counts = None


@torch.no_grad()
def update_balance_bias(model: nn.Module, group: dist.ProcessGroup | None = None) -> None:
    """Move each MoE layer's auxiliary-loss-free bias once, from the load of its training
    forwards since the last call (one optimiser step's), then clear that load.

    DeepSeek-V3 (DeepSeek-AI 2024, §2.1.2; Wang et al. 2024): at the end of each
    step, b_i += bias_speed * sign(mean_j c_j - c_i), with c the step's assignment counts. When
    torch.distributed is initialised with more than one rank in `group` (None: the default
    group), the counts are summed over its ranks first, so every rank applies the same update
    from the global load; then every rank of `group` must call this (it is a collective).
    A no-op for dense models and for layers with bias_speed 0.
    """
    layers = [m for m in moe_layers(model) if m.cfg.bias_speed > 0]
    if not layers:
        return
    counts = torch.cat(
        [
            m.step_counts
            if m.step_counts is not None
            else torch.zeros(m.n_experts, dtype=torch.long, device=m.expert_bias.device)
            for m in layers
        ]
    )
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(counts, group=group)  # integer counts: the sum is exact on every rank
    for m, c in zip(layers, counts.split([m.n_experts for m in layers]), strict=True):
        m.step_counts = None
        # DeepSeek-V3 eq. 16-17: raise the bias of underloaded experts, lower overloaded ones.
        # A layer with no load this step (no training forward anywhere) has error 0: unmoved.
        error = c.float().mean() - c.float()
        m.expert_bias.add_(m.cfg.bias_speed * error.sign())


def router_losses(model: nn.Module) -> Tensor | None:
    """Sum of the weighted balancing losses of the model's last forward (None for dense)."""
    losses = [m.aux_losses for m in moe_layers(model) if m.aux_losses is not None]
    return torch.stack(losses).sum() if losses else None


def with_router_losses(model: nn.Module, loss: Tensor) -> Tensor:
    """`loss` plus the balancing losses of the model's last forward, in training (objectives
    other than pretraining call this right after their forward so MoE stays balanced)."""
    aux = router_losses(model)
    return loss + aux if aux is not None and model.training else loss


def routing_metrics(model: nn.Module) -> dict[str, float]:
    """Per-layer routing statistics of the last forward, flat for the metrics log:
    `moe/L{i}/{cv,maxvio,entropy,dropped,aux_loss,z_loss}`, `moe/L{i}/load/{e}`, and the
    means over layers as `moe/{cv,maxvio,entropy,dropped}` and sums `moe/{aux_loss,z_loss}`."""
    out: dict[str, float] = {}
    rows = []
    for m in moe_layers(model):
        if m.stats is None:
            continue
        s = m.stats
        row = {
            **load_balance(s.counts),
            "entropy": float(s.entropy),
            "dropped": float(s.dropped),
            "aux_loss": float(s.aux_loss),
            "z_loss": float(s.z_loss),
        }
        rows.append(row)
        out.update({f"moe/L{m.layer}/{key}": v for key, v in row.items()})
        out.update({f"moe/L{m.layer}/load/{e}": float(v) for e, v in enumerate(s.load)})
    if rows:
        for key in ("cv", "maxvio", "entropy", "dropped"):
            out[f"moe/{key}"] = sum(r[key] for r in rows) / len(rows)
        for key in ("aux_loss", "z_loss"):
            out[f"moe/{key}"] = sum(r[key] for r in rows)
    return out


@torch.no_grad()
def routing_report(model: nn.Module, batches: Iterable[Any]) -> list[dict[str, Any]]:
    """Routing statistics of each MoE layer accumulated over `batches` of (inputs, ...) in eval
    mode: per layer its index, expert load fractions, CV, MaxVio, token-weighted mean router
    entropy, and mean aux and z losses."""
    model.eval()
    layers = moe_layers(model)
    counts = [torch.zeros(m.n_experts, dtype=torch.float64) for m in layers]
    sums = [{"entropy": 0.0, "aux_loss": 0.0, "z_loss": 0.0} for _ in layers]
    n_batches = n_tokens = 0
    device = next(model.parameters()).device
    for batch in batches:
        x = batch[0] if isinstance(batch, tuple | list) else batch
        model(x.to(device))
        n_batches += 1
        n_tokens += x.numel()
        for i, m in enumerate(layers):
            assert m.stats is not None
            counts[i] += m.stats.counts.double().cpu()
            sums[i]["entropy"] += float(m.stats.entropy) * x.numel()
            sums[i]["aux_loss"] += float(m.stats.aux_loss)
            sums[i]["z_loss"] += float(m.stats.z_loss)
    if n_batches == 0:
        raise ValueError("no batches to compute routing statistics on")
    report = []
    for m, c, s in zip(layers, counts, sums, strict=True):
        report.append(
            {
                "layer": m.layer,
                "load": (c / c.sum().clamp(min=1)).tolist(),
                **load_balance(c),
                "entropy": s["entropy"] / n_tokens,
                "aux_loss": s["aux_loss"] / n_batches,
                "z_loss": s["z_loss"] / n_batches,
            }
        )
    return report


def plot_load(reports: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    """Bar charts of per-expert load, one row per report (e.g. a run, or balancing on/off) and
    one column per layer, with the uniform load 1/E dashed; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n_rows, n_cols = len(reports), max(len(r) for r in reports.values())
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.6 * n_cols, 2.2 * n_rows), squeeze=False, sharey=True
    )
    for row, (name, report) in enumerate(reports.items()):
        for col, layer in enumerate(report):
            ax = axes[row][col]
            load = layer["load"]
            ax.bar(range(len(load)), load, color="tab:blue")
            ax.axhline(1 / len(load), color="black", linestyle="--", linewidth=0.8)
            ax.set_title(f"{name}  L{layer['layer']}  CV {layer['cv']:.2f}", fontsize=8)
            ax.set_xticks(range(len(load)))
            ax.tick_params(labelsize=7)
        axes[row][0].set_ylabel("load fraction", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("expert", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
