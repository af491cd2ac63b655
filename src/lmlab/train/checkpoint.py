"""Atomic checkpoints and exact resume.

Layout inside a run directory:

    checkpoints/step_000100/model.safetensors   weights (tied tensors stored once)
    checkpoints/step_000100/optim.pt            optimizer state
    checkpoints/step_000100/state.json          step, tokens seen, extra loop state
    checkpoints/step_000100/rng.pt              torch / numpy / python RNG states
    checkpoints/latest                          the name of the newest complete checkpoint

A checkpoint is written into a temporary directory, every file fsynced, then renamed into place;
only after that does `latest` move (temp file + fsync + rename). A crash at any point leaves
`latest` naming the previous complete checkpoint.

Weights and optimizer state are stored as *full* state dicts keyed by parameter name (gathered
with `torch.distributed.checkpoint.state_dict`), so one format serves a single process, DDP and
FSDP2, and a run can resume on a different number of processes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

CKPT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """No usable checkpoint where one was expected."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for f in path.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(path)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    """Checkpoint a model (single process) atomically; see `write_checkpoint`."""
    msd, osd = full_state(model, optimizer)
    return write_checkpoint(run_dir, msd, osd, state, keep, tied_aliases(model))


def write_checkpoint(
    run_dir: Path,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any] | None,
    state: dict[str, Any],
    keep: int = 2,
    aliases: dict[str, str] | None = None,
) -> Path:
    """Write checkpoint `state["step"]` atomically and prune all but the newest `keep`.
    Tied weights (`aliases`) are stored once."""
    root = run_dir / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{state['step']:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {
        k: v.detach().contiguous() for k, v in model_state.items() if k not in (aliases or {})
    }
    save_file(tensors, str(tmp / "model.safetensors"))
    if optim_state is not None:
        torch.save(optim_state, tmp / "optim.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    _fsync_tree(tmp)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    write_atomic(root / "latest", name)
    names = sorted(p.name for p in root.glob("step_*") if p.is_dir())
    for old in names[: max(0, len(names) - keep)]:
        if old != name:
            shutil.rmtree(root / old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run, or CheckpointError naming the problem."""
    pointer = run_dir / CKPT_DIR / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} holds no checkpoint (no {CKPT_DIR}/latest)")
    path = run_dir / CKPT_DIR / pointer.read_text().strip()
    if not (path / "state.json").is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete")
    return path


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    restore_rng: bool = False,
) -> dict[str, Any]:
    """Load weights (and optionally optimizer and RNG state) from `path`; return its state.
    Works on plain, DDP-wrapped and FSDP2-sharded models alike (every rank reads the files)."""
    tensors = load_file(str(path / "model.safetensors"))
    for alias, name in tied_aliases(model).items():
        if name in tensors:
            tensors[alias] = tensors[name]
    try:
        set_model_state_dict(model, tensors, options=StateDictOptions(full_state_dict=True))
        if optimizer is not None:
            set_optimizer_state_dict(
                model,
                optimizer,
                torch.load(path / "optim.pt", weights_only=False),
                options=StateDictOptions(full_state_dict=True),
            )
    except (RuntimeError, KeyError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} does not match the model: {first}") from None
    if restore_rng:
        set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / "state.json").read_text())


def write_run_files(run_dir: Path, cfg: Any, tok: Any) -> None:
    """Create a run directory with its `config.json` (a RunConfig) and `tokenizer.json`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / "config.json")
    tok.save(run_dir / "tokenizer.json")


def load_run(run_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any, Any]:
    """Model (eval mode, latest weights), tokenizer and RunConfig of a run directory."""
    from lmlab.config import RunConfig
    from lmlab.data.tokenizer import Tokenizer
    from lmlab.model.transformer import Transformer

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "tokenizer.json").is_file():
        raise CheckpointError(f"{run_dir} is not an lmlab run (no config.json/tokenizer.json)")
    cfg = RunConfig.load(run_dir / "config.json")
    model = Transformer(cfg.model)
    load_checkpoint(latest_checkpoint(run_dir), model)
    return model.to(device).eval(), Tokenizer.load(run_dir / "tokenizer.json"), cfg
