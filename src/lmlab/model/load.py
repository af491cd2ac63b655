"""Models in and out of run directories: build the transformer a run describes and load its
latest weights, or write a model as a run's checkpoint (imports, reward-model heads).

Training keeps its own, distributed-aware checkpointing (`train/checkpoint.py`: sharded models,
optimizer and RNG state); everything that only needs a model for inference or scoring — the
engine, evaluation, reasoning, the server — loads it here, without importing training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmlab.config import RunConfig
from lmlab.data.tokenizer import Tokenizer
from lmlab.model.heads import ScalarHeadModel
from lmlab.model.transformer import Transformer
from lmlab.runs import (
    CONFIG_FILE,
    REWARD_FILE,
    TOKENIZER_FILE,
    CheckpointError,
    latest_checkpoint,
    read_weights,
    require_run,
    write_checkpoint,
)


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """Parameter names that are another name of an earlier parameter (tied weights)."""
    first: dict[int, str] = {}
    aliases = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[name] = first[id(p)]
        else:
            first[id(p)] = name
    return aliases


def load_weights(model: nn.Module, checkpoint: Path) -> None:
    """Load a checkpoint folder's weights into `model` (CheckpointError if they do not fit)."""
    tensors = read_weights(checkpoint, tied_aliases(model))
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {checkpoint} does not match the model: {first}"
        ) from None


def save_model(run_dir: Path, model: nn.Module, state: dict[str, Any]) -> Path:
    """Write `model`'s weights as the run's checkpoint `state["step"]` (no optimizer state)."""
    return write_checkpoint(run_dir, model.state_dict(), None, state, aliases=tied_aliases(model))


def load_run(
    run_dir: Path, device: str | torch.device = "cpu"
) -> tuple[Transformer, Tokenizer, RunConfig]:
    """Model (eval mode, latest weights), tokenizer and RunConfig of a run directory."""
    run_dir = require_run(Path(run_dir))
    cfg = RunConfig.load(run_dir / CONFIG_FILE)
    model = Transformer(cfg.model)
    load_weights(model, latest_checkpoint(run_dir))
    return model.to(device).eval(), Tokenizer.load(run_dir / TOKENIZER_FILE), cfg


def load_reward_model(
    run_dir: Path, device: str | torch.device = "cpu"
) -> tuple[ScalarHeadModel, Tokenizer]:
    """The reward model (eval mode) and tokenizer of a run written by `lmlab rm`."""
    run_dir = require_run(Path(run_dir))
    if not (run_dir / REWARD_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a reward model run (no {REWARD_FILE})")
    cfg = RunConfig.load(run_dir / CONFIG_FILE)
    model = ScalarHeadModel(Transformer(cfg.model))
    load_weights(model, latest_checkpoint(run_dir))
    return model.to(device).eval(), Tokenizer.load(run_dir / TOKENIZER_FILE)
