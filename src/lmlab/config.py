"""Typed configuration dataclasses and named presets.

Every field here is a command-line flag: `ModelConfig.n_kv_head` is `--model.n-kv-head`,
`TrainConfig.max_steps` is `--train.max-steps`. A run's full `RunConfig` is written to
`config.json` in its directory, so a run is reproducible from that file alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# RoPE has no hard length limit, but a context this long would not fit any machine we target;
# anything above it is almost certainly a typo (an extra zero).
MAX_CONTEXT_LENGTH = 131072


@dataclass
class ModelConfig:
    """Shape of the decoder-only transformer."""

    vocab_size: int = 4096
    """Vocabulary size (for BPE, the size the tokenizer is trained to; char/byte set their own)."""
    context_length: int = 256
    """Maximum sequence length the model is trained and run at."""
    n_layer: int = 4
    """Number of transformer blocks."""
    n_head: int = 4
    """Number of query heads."""
    n_kv_head: int | None = None
    """Number of key/value heads (grouped-query attention); None means n_head (multi-head)."""
    d_model: int = 128
    """Residual stream width."""
    d_ff: int | None = None
    """SwiGLU hidden size; None means 8/3 * d_model rounded up to a multiple of 32."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    tie_embeddings: bool = True
    """Share the input embedding and output projection matrices."""
    init_std: float = 0.02
    """Standard deviation of the normal weight init (residual outputs scaled by 1/sqrt(2L))."""

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ffn_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        return 32 * -(-(8 * self.d_model) // (3 * 32))

    def validate(self) -> None:
        """Raise ValueError with a one-line message if the shape is inconsistent."""
        if min(self.vocab_size, self.context_length, self.n_layer, self.n_head, self.d_model) < 1:
            raise ValueError("model sizes must be positive integers")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_head {self.n_head}")
        if self.head_dim % 2:
            raise ValueError(f"head dim {self.head_dim} must be even for RoPE")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head {self.n_head} is not divisible by n_kv_head {self.kv_heads}")
        if self.context_length > MAX_CONTEXT_LENGTH:
            raise ValueError(
                f"context length {self.context_length} is above the maximum {MAX_CONTEXT_LENGTH}"
            )


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpointing settings of the training loop."""

    batch_size: int = 16
    """Sequences per micro-batch on each process."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    max_steps: int = 600
    """Optimizer steps in the run (the LR schedule ends here)."""
    lr: float = 3e-3
    """Peak learning rate."""
    min_lr: float = 3e-4
    """Learning rate at the end of the schedule."""
    warmup_steps: int = 30
    """Linear warmup steps."""
    schedule: Literal["cosine", "wsd"] = "cosine"
    """'cosine': warmup + cosine to min_lr; 'wsd': warmup-stable-decay (linear decay at the end)."""
    decay_frac: float = 0.2
    """Fraction of steps spent decaying in the 'wsd' schedule."""
    weight_decay: float = 0.1
    """AdamW weight decay (matrices only, not norms or embeddings)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    eval_every: int = 100
    """Evaluate validation loss every this many steps (and at the last step)."""
    eval_iters: int = 20
    """Validation batches per evaluation."""
    ckpt_every: int | None = None
    """Checkpoint every this many steps; None means at every evaluation."""
    keep_ckpts: int = 2
    """How many recent checkpoints to keep on disk."""
    log_every: int = 10
    """Write a metrics line every this many steps."""
    seed: int = 1337
    """Seed for init, data order and dropout-free training (exactly reproducible on CPU)."""
    compile: bool = False
    """Compile the model with torch.compile."""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda[:N]'."""

    def validate(self) -> None:
        if min(self.batch_size, self.grad_accum, self.max_steps, self.eval_iters) < 1:
            raise ValueError("batch size, grad accum, max steps and eval iters must be >= 1")
        if self.eval_every < 1 or (self.ckpt_every is not None and self.ckpt_every < 1):
            raise ValueError("eval and checkpoint intervals must be >= 1")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError("need 0 <= min_lr <= lr and lr > 0")


@dataclass
class DataConfig:
    """Where the training text comes from and how it is tokenized."""

    corpus: str = "python-stdlib"
    """A source name (python-stdlib, ...) or a path to a text file, folder, glob or .jsonl."""
    tokenizer: str = "bpe"
    """'char', 'byte', 'bpe' (trained on the corpus) or a path to a tokenizer.json."""
    text_field: str = "text"
    """Field holding the text in JSONL corpora."""
    val_fraction: float = 0.02
    """Fraction of documents held out for validation (python-stdlib has a fixed split)."""


@dataclass
class RunConfig:
    """Everything that defines a pretraining run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return cls(
            model=_build(ModelConfig, d.get("model", {})),
            train=_build(TrainConfig, d.get("train", {})),
            data=_build(DataConfig, d.get("data", {})),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        return cls.from_dict(json.loads(path.read_text()))


def _build(cls: type, d: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


PRESETS: dict[str, RunConfig] = {
    # ~1.3M parameters: a few minutes on 2 CPU cores.
    "tiny": RunConfig(
        model=ModelConfig(vocab_size=4096, context_length=256, n_layer=4, n_head=4, d_model=128),
        train=TrainConfig(batch_size=16, max_steps=600, lr=3e-3, min_lr=3e-4, warmup_steps=30),
    ),
    # ~10M parameters.
    "small": RunConfig(
        model=ModelConfig(vocab_size=4096, context_length=256, n_layer=6, n_head=6, d_model=384),
        train=TrainConfig(
            batch_size=16, max_steps=3000, lr=1.5e-3, min_lr=1.5e-4, warmup_steps=100
        ),
    ),
    # GPT-2 small shaped (124M with a GPT-2-sized vocabulary): for GPUs.
    "gpt2-124m": RunConfig(
        model=ModelConfig(
            vocab_size=50304, context_length=1024, n_layer=12, n_head=12, d_model=768
        ),
        train=TrainConfig(
            batch_size=32,
            grad_accum=16,
            max_steps=20000,
            lr=6e-4,
            min_lr=6e-5,
            warmup_steps=700,
            eval_every=500,
            eval_iters=50,
            compile=True,
        ),
    ),
}


def preset(name: str) -> RunConfig:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return RunConfig.from_dict(PRESETS[name].to_dict())
