"""Training checkpoints: gather and restore a model's and optimizer's full state, for exact resume.

The on-disk layout and its atomic writes belong to `lmlab.runs` (see there). This module adds
what only training needs: weights and optimizer state are gathered as *full* state dicts keyed
by parameter name (`torch.distributed.checkpoint.state_dict`), so one format serves a single
process, DDP and FSDP2, and a run can resume on a different number of processes; resuming also
restores every random generator. Optimizer and RNG state are read as data only
(`lmlab.runs.read_state_file`: checksummed, `weights_only=True`), never as code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from lmlab.model.load import tied_aliases
from lmlab.runs import (
    CheckpointError,
    read_checkpoint_state,
    read_state_file,
    read_weights,
    set_rng_state,
    write_checkpoint,
)


def full_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Full (unsharded, name-keyed) model and optimizer state dicts. Under torchrun this is a
    collective: every rank must call it; only rank 0 receives the (CPU) tensors."""
    opts = StateDictOptions(full_state_dict=True, cpu_offload=dist.is_initialized())
    msd = get_model_state_dict(model, options=opts)
    osd = get_optimizer_state_dict(model, optimizer, options=opts) if optimizer else None
    return msd, osd


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Checkpoint a model (single process) atomically; see `lmlab.runs.write_checkpoint`."""
    msd, osd = full_state(model, optimizer)
    return write_checkpoint(run_dir, msd, osd, state, keep, tied_aliases(model))


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Load weights (and optionally optimizer and RNG state) from `path`; return its state.
    Works on plain, DDP-wrapped and FSDP2-sharded models alike (every rank reads the files).
    Every file is read and checked (checksums, data only) before anything is set, so a damaged
    file is one CheckpointError that leaves the model, optimizer and generators untouched."""
    state = read_checkpoint_state(path)
    tensors = read_weights(path, tied_aliases(model))
    optim_state = read_state_file(path, "optim.pt") if optimizer is not None else None
    rng = read_state_file(path, "rng.pt") if restore_rng else None
    try:
        set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True))
        if optimizer is not None:
            set_optimizer_state_dict(
                model, optimizer, optim_state, options=StateDictOptions(full_state_dict=True)
            )
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} does not match the model: {_first(e)}") from None
    if rng is not None:
        try:
            set_rng_state(rng)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as e:
            raise CheckpointError(f"{path / 'rng.pt'} is not an RNG state: {_first(e)}") from None
    return state


def _first(e: BaseException) -> str:
    """The first line of an exception's message (or its type's name)."""
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
