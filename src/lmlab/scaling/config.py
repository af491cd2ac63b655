"""Light settings of the scaling lab (no torch or SciPy import, so the CLI starts fast):
the sweep plan's dataclass and the error type every scaling module raises."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


class ScalingError(ValueError):
    """Bad scaling input (a table, a plan or a sweep directory); shown as one line."""


@dataclass
class PlanConfig:
    """How a sweep is laid out and trained."""

    corpus: str = "python-stdlib"
    """Corpus every run trains on (a source name or a path)."""
    tokenizer: str = "bpe"
    """char, byte, bpe or a tokenizer.json path."""
    vocab_size: int = 2048
    """BPE vocabulary size (char and byte tokenizers set their own)."""
    budgets: str = "3e13,1e14,3e14"
    """Comma-separated training FLOP budgets."""
    sizes: int = 5
    """Model sizes per budget (consecutive shapes of the family)."""
    center_tpp: float = 20.0
    """Each budget's ladder is centred on the size with this many tokens per parameter."""
    aspect: int = 32
    """d_model per layer: the family's shapes have d_model = head_dim, 2 head_dim, ... and
    n_layer = d_model / aspect (rounded half up, at least 1)."""
    head_dim: int = 32
    """Attention head size."""
    max_layers: int = 24
    """Deepest shape in the family."""
    context_length: int = 128
    """Sequence length of every run."""
    count: Literal["total", "non_embedding"] = "total"
    """Which parameters N counts."""
    flops: Literal["exact", "6N"] = "exact"
    """Training FLOPs per token: exact (6 N_matmul + attention) or 6 * N."""
    batch_size: int = 16
    """Sequences per optimizer step."""
    lr: float = 3e-3
    """Peak learning rate at width lr_width (scaled by lr_width / d_model above it)."""
    lr_width: int = 128
    """Width up to which the peak learning rate is `lr`."""
    warmup_frac: float = 0.05
    """Warmup as a fraction of each run's steps (at least one step)."""
    min_lr_frac: float = 0.1
    """The cosine ends at this fraction of the peak learning rate."""
    min_steps: int = 20
    """Fewest optimizer steps a run may have (keeps budgets within 2.5% after rounding)."""
    evals: int = 8
    """Validation evaluations per run (the loss curve Approach 1 uses)."""
    eval_iters: int = 10
    """Validation batches per evaluation."""
    seed: int = 1337
    """Seed of every run."""
    probe_steps: int = 3
    """Timed optimizer steps per shape in the throughput probe (0: no probe, no estimate)."""

    def budget_list(self) -> list[float]:
        try:
            budgets = [float(b) for b in self.budgets.split(",") if b.strip()]
        except ValueError:
            raise ScalingError(
                f"--budgets {self.budgets!r} must be comma-separated numbers, e.g. 3e13,1e14"
            ) from None
        if not budgets or any(not math.isfinite(b) or b <= 0 for b in budgets):
            raise ScalingError(f"--budgets {self.budgets!r} must be positive numbers")
        return sorted(set(budgets))

    def validate(self) -> None:
        if self.sizes < 3:
            raise ScalingError(f"--sizes {self.sizes}: an IsoFLOP parabola needs 3 or more")
        if (
            min(
                self.aspect,
                self.head_dim,
                self.max_layers,
                self.context_length,
                self.batch_size,
                self.min_steps,
                self.evals,
                self.eval_iters,
            )
            < 1
        ):
            raise ScalingError(
                "aspect, head dim, layers, context, batch, steps and evals must be >= 1"
            )
        if self.head_dim % 2:
            raise ScalingError(f"--head-dim {self.head_dim} must be even (RoPE)")
        if self.count not in ("total", "non_embedding") or self.flops not in ("exact", "6N"):
            raise ScalingError("--count must be total|non_embedding and --flops exact|6N")
        if not 0 < self.min_lr_frac <= 1 or not 0 <= self.warmup_frac < 1 or self.lr <= 0:
            raise ScalingError("need lr > 0, 0 < min_lr_frac <= 1 and 0 <= warmup_frac < 1")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.context_length
