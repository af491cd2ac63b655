"""THE training loop: every phase (pretraining, SFT, reward modelling, RL) trains through it.

A phase supplies an *objective* — a function `(model, batch) -> (loss, metrics)` — and its data
as a function `(step, micro) -> batch`; the `Trainer` owns everything else: AdamW, the LR
schedule, gradient accumulation, clipping, periodic evaluation, metrics (JSONL, TensorBoard when
installed, a rich progress bar), atomic checkpoints and exact resume, bf16 autocast on CUDA,
`torch.compile`, and data parallelism under `torchrun` (gloo on CPU, nccl on CUDA): DDP, or
FSDP2 (`--train.parallel fsdp`: parameters, gradients and optimizer state sharded per block).

Phases with their own outer loop (PPO: rollouts, then several epochs of minibatches) call
`Trainer.step` directly instead of `Trainer.fit`.

A step whose loss or gradient norm is NaN or infinite stops the run (`NonFiniteError`, one line)
before the optimizer touches the weights: nothing diverged is ever checkpointed, and the run's
latest checkpoint stays the last good one (docs/reliability.md, "NaN policy").
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
from lmlab.model.load import tied_aliases
from lmlab.model.moe import clear_balance_counts, update_balance_bias
from lmlab.model.transformer import Attention, SwiGLU
from lmlab.runs import (
    METRICS_FILE,
    CheckpointError,
    NonFiniteError,
    latest_checkpoint,
    write_atomic,
    write_checkpoint,
)
from lmlab.train.checkpoint import full_state, load_checkpoint
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
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--train.device {device}: CUDA is not available on this machine")
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


def autocast_for(
    device: torch.device, cpu_bf16: bool = False
) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; float32 on CPUs unless `cpu_bf16` (bf16 matmuls are ~100x slower
    on CPUs without bf16 matrix units; on ones with them, e.g. AMX, bf16 can be faster)."""
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
    """Owns the model's optimisation state for one run directory.

    Device and rank are not defaulted: a stage decides them once (`train/stage.py`) and hands
    the same ones to every Trainer it builds."""

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        run_dir: Path,
        dist_info: Dist,
        device: torch.device,
        show_progress: bool = True,
    ) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.dist = dist_info
        self.device = device
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
        self.resumed_state: dict[str, Any] = {}
        """The loop state of the checkpoint this Trainer resumed from (with any `extra`)."""
        self.show_progress = show_progress and self.dist.is_main
        self._tb: Any = None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast_for(self.device, self.cfg.cpu_bf16)

    # --- one optimizer step ---------------------------------------------------------------

    def step(
        self, objective: Objective, batches: Iterable[Any], n_tokens: int = 0
    ) -> dict[str, float]:
        """Accumulate gradients over `batches` (micro-batches of one step), clip, update.

        Returns the step's metrics averaged over micro-batches and data-parallel ranks. The
        step trained on `n_tokens` tokens (all ranks together); an objective whose batches vary
        in size reports its own count instead, as the metric `tokens` of each micro-batch.
        """
        micro = list(batches)
        lr = lr_at(self.step_count, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.train_model.train()
        clear_balance_counts(self.model)  # MoE: the bias update sees this step's forwards only
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
        # the global norm is measured even when clipping is off: it is the divergence check
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP2
            grad_norm = grad_norm.full_tensor()
        self.check_finite(sums["loss"] / len(micro), float(grad_norm))
        self.optimizer.step()
        update_balance_bias(self.model)  # MoE: once per step, from the global expert load
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        counted = sums.pop("tokens", None)
        out = {k: v / len(micro) for k, v in sums.items()}
        if counted is not None:  # this rank's count: the step's is the sum over ranks
            out["tokens_counted"] = counted
        out = self.all_reduce_mean(out)
        if counted is not None:
            n_tokens = round(out.pop("tokens_counted") * self.dist.world)
        self.tokens += n_tokens
        out["grad_norm"] = float(grad_norm)
        out["lr"] = lr
        return out

    def check_finite(self, loss: float, grad_norm: float) -> None:
        """Stop (NonFiniteError) before the update if this step's loss or gradient norm is NaN
        or infinite on any rank. Stopping was chosen over skipping the batch and rolling back
        (as PaLM and OLMo do at scale): on a lab's runs a NaN almost always means a setting to
        change (a learning rate too high), which a skipped batch would hide."""
        ok = math.isfinite(loss) and math.isfinite(grad_norm)
        if self.dist.world > 1:  # every rank stops together, or none does
            flag = torch.tensor([1.0 if ok else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            ok = bool(flag.item())
        if ok:
            return
        self.optimizer.zero_grad(set_to_none=True)
        try:
            kept = f"the last good checkpoint, {latest_checkpoint(self.run_dir)}, is kept"
        except CheckpointError:
            kept = "no checkpoint had been written yet"
        raise NonFiniteError(
            f"training diverged at step {self.step_count + 1}: loss {loss:.4g}, gradient norm "
            f"{grad_norm:.4g}; stopped before updating the weights and {kept}; lower --train.lr "
            f"(now {self.cfg.lr:g}) or lengthen --train.warmup-steps, then start again"
        )

    def all_reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
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
        """Checkpoint the run (rank 0 writes). A write that fails — weights that are not
        finite, a full disk — raises on every rank, so no rank waits for one that stopped."""
        state = {"step": self.step_count, "tokens": self.tokens, **(extra or {})}
        msd, osd = full_state(self.model, self.optimizer)  # collective under torchrun
        failed: ValueError | None = None
        if self.dist.is_main:
            try:
                write_checkpoint(
                    self.run_dir, msd, osd, state, self.cfg.keep_ckpts, tied_aliases(self.model)
                )
            except ValueError as e:  # NonFiniteError, CheckpointError
                failed = e
        if self.dist.world > 1:  # also the barrier: every rank waits for rank 0's write
            flag = torch.tensor([0.0 if failed is None else 1.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if failed is None and flag.item() > 0:
                raise CheckpointError(f"rank 0 could not write the checkpoint of {self.run_dir}")
        if failed is not None:
            raise failed

    def resume(self) -> dict[str, Any]:
        """Restore model, optimizer, RNG and counters from the run's latest checkpoint."""
        path = latest_checkpoint(self.run_dir)
        state = load_checkpoint(path, self.model, self.optimizer, restore_rng=True)
        self.step_count, self.tokens = int(state["step"]), int(state["tokens"])
        self.resumed_state = state
        if self.dist.is_main:
            truncate_metrics(self.run_dir / METRICS_FILE, self.step_count)
        return state

    def log(self, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        with (self.run_dir / METRICS_FILE).open("a") as f:
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
                    speed = (
                        f"{row['tokens_per_s']:,.0f} tok/s"
                        if self.tokens > tokens0
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


def truncate_metrics(path: Path, step: int) -> None:
    """Drop metrics written after checkpoint `step` (a resumed run rewrites them exactly);
    the file is replaced atomically, so a kill during the rewrite loses no history."""
    if not path.exists():
        return
    keep = [
        ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step
    ]
    write_atomic(path, "".join(ln + "\n" for ln in keep))
