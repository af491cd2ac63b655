"""THE training loop: every phase (pretraining, SFT, reward modelling, RL) trains through it.

A phase supplies an *objective* — a function `(model, batch) -> (loss, metrics)` — and its data
as a function `(step, micro) -> batch`; the `Trainer` owns everything else: AdamW, the LR
schedule, gradient accumulation, clipping, periodic evaluation, metrics (JSONL, TensorBoard when
installed, a rich progress bar), atomic checkpoints and exact resume, bf16 autocast on CUDA,
`torch.compile`, and data parallelism under `torchrun` (gloo on CPU, nccl on CUDA): DDP, or
FSDP2 (`--train.parallel fsdp`: parameters, gradients and optimizer state sharded per block).

Phases with their own outer loop (PPO: rollouts, then several epochs of minibatches) call
`Trainer.step` directly instead of `Trainer.fit`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from lmlab.config import TrainConfig
from lmlab.model.transformer import Attention, SwiGLU
from lmlab.train.checkpoint import (
    full_state,
    latest_checkpoint,
    load_checkpoint,
    tied_aliases,
    write_checkpoint,
)
from lmlab.train.optim import MuonAdamW

Objective = Callable[[nn.Module, Any], tuple[Tensor, dict[str, float]]]
BatchFn = Callable[[int, int], Any]

console = Console(stderr=True)


@dataclass
class Dist:
    """Where this process sits in a (possibly single-process) data-parallel job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> tuple[Dist, torch.device]:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        dev = (
            torch.device("cuda", d.local_rank)
            if world > 1
            else torch.device(device if device != "auto" else "cuda")
        )
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return d, dev


def shard_model(model: nn.Module) -> None:
    """FSDP2 from outside the model (torchtitan style): each block is one sharding unit, then
    the root (embedding, final norm, output projection) is another."""
    from torch.distributed.fsdp import fully_shard

    for block in getattr(model, "blocks", []):
        fully_shard(block)
    fully_shard(model)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to min_lr
    or warmup-stable-decay (Hu et al. 2024: constant, then linear decay over `decay_frac`)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "wsd":
        decay_start = int(cfg.max_steps * (1 - cfg.decay_frac))
        if step < decay_start:
            return cfg.lr
        frac = (step - decay_start) / max(1, cfg.max_steps - decay_start)
        return cfg.lr + (cfg.min_lr - cfg.lr) * min(1.0, frac)
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names.

    'adamw': AdamW with weight decay on matrices only (norm gains are not decayed).
    'muon': Muon (`train/optim.py`) for the matrices of the transformer blocks, at peak learning
    rate `muon_lr`, with the fused q/k/v and gate/up weights orthogonalised per projection;
    AdamW as above for the rest (embeddings, output projection, norm gains, heads).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "muon":
        hidden = {
            id(p): p
            for block in getattr(model, "blocks", [])
            for p in block.parameters()
            if p.requires_grad and p.dim() >= 2
        }
        splits = _fused_splits(model)
        rest = [p for p in params if id(p) not in hidden]
        groups: list[dict[str, Any]] = [
            {
                "params": list(hidden.values()),
                "muon": True,
                "lr_scale": cfg.muon_lr / cfg.lr,
                "momentum": cfg.muon_momentum,
                "weight_decay": cfg.muon_weight_decay,
                "splits": [splits.get(i) for i in hidden],
            },
            *_adamw_groups(rest, cfg),
        ]
        return MuonAdamW([g for g in groups if g["params"]], lr=cfg.lr)
    return torch.optim.AdamW(
        _adamw_groups(params, cfg),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=device.type == "cuda",
    )


def _adamw_groups(params: list[nn.Parameter], cfg: TrainConfig) -> list[dict[str, Any]]:
    """Weight decay on matrices, none on vectors (norm gains, the smearing gate)."""
    return [
        {
            "params": [p for p in params if p.dim() >= 2],
            "weight_decay": cfg.weight_decay,
            "betas": (cfg.beta1, cfg.beta2),
        },
        {
            "params": [p for p in params if p.dim() < 2],
            "weight_decay": 0.0,
            "betas": (cfg.beta1, cfg.beta2),
        },
    ]


def _fused_splits(model: nn.Module) -> dict[int, tuple[int, ...]]:
    """Row blocks of the fused projections (by parameter id): q, k, v of `Attention.wqkv`,
    gate and up of `SwiGLU.w13`; each is a separate linear map for Muon."""
    out: dict[int, tuple[int, ...]] = {}
    for m in model.modules():
        if isinstance(m, Attention):
            q, kv = m.n_head * m.head_dim, m.n_kv * m.head_dim
            out[id(m.wqkv.weight)] = (q, kv, kv)
        elif isinstance(m, SwiGLU):
            half = m.w13.weight.shape[0] // 2
            out[id(m.w13.weight)] = (half, half)
    return out


class Trainer:
    """Owns the model's optimisation state for one run directory."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        run_dir: Path,
        dist_info: Dist | None = None,
        device: torch.device | None = None,
        show_progress: bool = True,
    ) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.dist = dist_info or Dist()
        self.device = device or torch.device("cpu")
        self.model = model.to(self.device)  # the unwrapped model: checkpoints and eval use it
        self.train_model: nn.Module = self.model
        self._ddp: torch.nn.parallel.DistributedDataParallel | None = None
        self._fsdp = self.dist.world > 1 and cfg.parallel == "fsdp"
        if self._fsdp:
            shard_model(self.model)
        elif self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
            self.train_model = self._ddp
        if cfg.compile:
            self.train_model = torch.compile(self.train_model)  # type: ignore[assignment]
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        self.step_count = 0
        self.tokens = 0
        self.show_progress = show_progress and self.dist.is_main
        self._tb: Any = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" or self.cfg.cpu_bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- one optimizer step ---------------------------------------------------------------

    def step(
        self, objective: Objective, batches: Iterable[Any], n_tokens: int = 0
    ) -> dict[str, float]:
        """Accumulate gradients over `batches` (micro-batches of one step), clip, update.

        Returns the step's metrics averaged over micro-batches and data-parallel ranks.
        """
        micro = list(batches)
        lr = lr_at(self.step_count, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_model.train()
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            # DDP all-reduces gradients only on the last micro-batch of the step.
            last_micro = i == len(micro) - 1
            ctx = self._ddp.no_sync() if self._ddp and not last_micro else contextlib.nullcontext()
            if self._fsdp:
                self.model.set_requires_gradient_sync(last_micro)  # type: ignore[operator]
            with ctx, self.autocast():
                loss, metrics = objective(self.train_model, _to_device(batch, self.device))
                (loss / len(micro)).backward()
            sums["loss"] = sums.get("loss", 0.0) + loss.detach().item()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            if self.cfg.grad_clip > 0
            else torch.zeros(())
        )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        self.tokens += n_tokens
        out = {k: v / len(micro) for k, v in sums.items()}
        out = self._all_reduce_mean(out)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        out["grad_norm"] = float(grad_norm)
        out["lr"] = lr
        return out

    def _all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.dist.world == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: float(v) / self.dist.world for k, v in zip(keys, t.tolist(), strict=True)}

    @torch.no_grad()
    def evaluate(self, objective: Objective, batches: Iterable[Any]) -> float:
        """Mean objective loss over `batches` (this rank's share), averaged across ranks."""
        self.model.eval()
        total, count = 0.0, 0
        for batch in batches:
            with self.autocast():
                loss, _ = objective(self.model, _to_device(batch, self.device))
            total += loss.item()
            count += 1
        t = torch.tensor([total, count], dtype=torch.float64, device=self.device)
        if self.dist.world > 1:
            dist.all_reduce(t)
        return float(t[0] / t[1].clamp(min=1))

    # --- checkpoints and metrics ------------------------------------------------------------

    def save(self, extra: dict[str, Any] | None = None) -> None:
        state = {"step": self.step_count, "tokens": self.tokens, **(extra or {})}
        msd, osd = full_state(self.model, self.optimizer)  # collective under torchrun
        if self.dist.is_main:
            write_checkpoint(
                self.run_dir, msd, osd, state, self.cfg.keep_ckpts, tied_aliases(self.model)
            )
        if self.dist.world > 1:
            dist.barrier()

    def resume(self) -> dict[str, Any]:
        """Restore model, optimizer, RNG and counters from the run's latest checkpoint."""
        path = latest_checkpoint(self.run_dir)
        state = load_checkpoint(path, self.model, self.optimizer, restore_rng=True)
        self.step_count, self.tokens = int(state["step"]), int(state["tokens"])
        if self.dist.is_main:
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.step_count)
        return state

    def log(self, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with (self.run_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float):
                    self._tb.add_scalar(k, v, row["step"])

    # --- the whole run ----------------------------------------------------------------------

    def fit(
        self,
        objective: Objective,
        train_batch: BatchFn,
        tokens_per_step: int,
        eval_batches: Callable[[], Iterable[Any]] | None = None,
    ) -> dict[str, float]:
        """Train from the current step to `max_steps`; returns the last logged metrics."""
        cfg = self.cfg
        ckpt_every = cfg.ckpt_every or cfg.eval_every
        last: dict[str, float] = {}
        t0, tokens0, step0 = time.perf_counter(), self.tokens, self.step_count
        progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.show_progress,
            transient=False,
        )
        with progress:
            task = progress.add_task(
                "train", total=cfg.max_steps, completed=self.step_count, info=""
            )
            while self.step_count < cfg.max_steps:
                step = self.step_count
                metrics = self.step(
                    objective,
                    (train_batch(step, m) for m in range(cfg.grad_accum)),
                    tokens_per_step,
                )
                done = self.step_count
                is_eval = eval_batches is not None and (
                    done % cfg.eval_every == 0 or done == cfg.max_steps
                )
                if done % cfg.log_every == 0 or is_eval or done == cfg.max_steps:
                    elapsed = time.perf_counter() - t0
                    row: dict[str, Any] = {
                        "step": done,
                        "tokens": self.tokens,
                        "train_loss": metrics.pop("loss"),
                        **metrics,
                        "tokens_per_s": (self.tokens - tokens0) / max(elapsed, 1e-9),
                        "steps_per_s": (done - step0) / max(elapsed, 1e-9),
                    }
                    # objectives whose batches vary in size (reward model, DPO) count no tokens
                    speed = (
                        f"{row['tokens_per_s']:,.0f} tok/s"
                        if tokens_per_step
                        else f"{row['steps_per_s']:.2f} steps/s"
                    )
                    if is_eval:
                        assert eval_batches is not None
                        row["val_loss"] = self.evaluate(objective, eval_batches())
                        progress.console.print(
                            f"step {done:>6}  train {row['train_loss']:.4f}  "
                            f"val {row['val_loss']:.4f}  lr {row['lr']:.2e}  {speed}"
                        )
                    self.log(row)
                    last = row
                    progress.update(task, info=f"loss {row['train_loss']:.3f} {speed}")
                if done % ckpt_every == 0 or done == cfg.max_steps:
                    self.save()
                progress.update(task, completed=done)
        return last


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics written after checkpoint `step` (a resumed run rewrites them exactly)."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step
    ]
    path.write_text("".join(ln + "\n" for ln in keep))
