"""Run directories: what a run is on disk, and every check, read and atomic write of one.

Every stage (pretraining, SFT, reward model, DPO, GRPO, PPO, an import) writes one directory:

    config.json        the RunConfig (model shape, loop settings, data)
    tokenizer.json     the tokenizer the model was trained with
    stage.json         which stage wrote the run, from which base, with which settings; its
                       status ("running" or "done"), the state a resume needs, and its summary
    metrics.jsonl      one JSON row per logged step
    checkpoints/step_NNNNNN/{model.safetensors, optim.pt, state.json, rng.pt}
    checkpoints/latest the name of the newest complete checkpoint

This module sits at the bottom of the package (it imports no other lmlab layer), so the engine,
evaluation, scaling and the server find runs without reaching into training code. Writes that
must never be seen half-done (stage.json, reports, `latest`) go through `write_atomic`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STAGE_FILE = "stage.json"
METRICS_FILE = "metrics.jsonl"
REWARD_FILE = "reward.json"
"""Written by a reward-model run (`lmlab rm`) beside its usual files: what marks it as one."""
CKPT_DIR = "checkpoints"


class RunDirError(ValueError):
    """An output directory that cannot take this run (shown to the user as one line)."""


class CheckpointError(ValueError):
    """No usable run or checkpoint where one was expected (shown to the user as one line)."""


class Saveable(Protocol):
    def save(self, path: Path) -> None: ...


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file directly in `path`, then the folder itself."""
    for f in path.iterdir():
        with f.open("rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(path)


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers see either the old or the new content."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def check_new_run_dir(out: Path, command: str = "pretrain") -> None:
    """Refuse an output directory that holds anything (nothing is ever overwritten)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"output {out} exists and is not a directory")
    if (out / CONFIG_FILE).exists():
        raise RunDirError(
            f"{out} already holds a run; continue it with `lmlab {command} --resume {out}` "
            "or choose another --out"
        )
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} is not empty; choose another --out")


def is_run(path: Path) -> bool:
    """Whether `path` holds a run's config and tokenizer (it may have no checkpoint yet)."""
    return (path / CONFIG_FILE).is_file() and (path / TOKENIZER_FILE).is_file()


def require_run(path: Path) -> Path:
    if not is_run(path):
        raise CheckpointError(f"{path} is not an lmlab run (no {CONFIG_FILE}/{TOKENIZER_FILE})")
    return path


def write_run_files(run_dir: Path, cfg: Saveable, tok: Saveable) -> None:
    """Create a run directory with its `config.json` (a RunConfig) and `tokenizer.json`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run_dir / CONFIG_FILE)
    tok.save(run_dir / TOKENIZER_FILE)


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest complete checkpoint of a run, or CheckpointError naming the problem."""
    pointer = run_dir / CKPT_DIR / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} holds no checkpoint (no {CKPT_DIR}/latest)")
    path = run_dir / CKPT_DIR / pointer.read_text().strip()
    if not (path / "state.json").is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete")
    return path


def rng_state() -> dict[str, Any]:
    """Every random generator a training step draws from (torch, CUDA, numpy, python)."""
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


def write_checkpoint(
    run_dir: Path,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any] | None,
    state: dict[str, Any],
    keep: int = 2,
    aliases: dict[str, str] | None = None,
) -> Path:
    """Write checkpoint `state["step"]` atomically and prune all but the newest `keep`.

    The files go to a temporary folder, each fsynced, which is then renamed into place; only
    after that does `latest` move (temp file + fsync + rename). A crash at any point leaves
    `latest` naming the previous complete checkpoint. Tied weights (`aliases`: name -> the name
    it shares storage with) are stored once.
    """
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
    fsync_tree(tmp)
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(root)
    write_atomic(root / "latest", name)
    names = sorted(p.name for p in root.glob("step_*") if p.is_dir())
    for old in names[: max(0, len(names) - keep)]:
        if old != name:
            shutil.rmtree(root / old, ignore_errors=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def read_weights(
    checkpoint: Path, aliases: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint folder, with tied names (`aliases`) filled in again."""
    tensors = load_file(str(checkpoint / "model.safetensors"))
    for alias, name in (aliases or {}).items():
        if name in tensors:
            tensors[alias] = tensors[name]
    return tensors


def read_checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    """The loop state saved with a checkpoint (step, tokens, extra stage state)."""
    return json.loads((checkpoint / "state.json").read_text())


def has_checkpoint(run_dir: Path) -> bool:
    try:
        latest_checkpoint(run_dir)
    except CheckpointError:
        return False
    return True


def checkpoint_step(run_dir: Path) -> int | None:
    """The optimiser step of the run's latest checkpoint (None: no checkpoint)."""
    if not has_checkpoint(run_dir):
        return None
    return int(read_checkpoint_state(latest_checkpoint(run_dir))["step"])


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's metrics rows (empty when it has none)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- stage.json -------------------------------------------------------------------------------


def read_stage(run_dir: Path) -> dict[str, Any] | None:
    """The run's stage record, or None for a run that has none (written before stage.json
    existed, or by hand)."""
    path = run_dir / STAGE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg}); the run is damaged") from None
    if not isinstance(record, dict) or not isinstance(record.get("stage"), str):
        raise CheckpointError(f"{path} is not a stage record (no 'stage' name)")
    return record


def start_stage_record(
    run_dir: Path,
    stage: str,
    base: Path | None,
    settings: dict[str, Any],
    state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write stage.json for a stage that is starting, and return it."""
    record = {
        "stage": stage,
        "base": None if base is None else str(base),
        "settings": settings,
        "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seconds": 0.0,
        "state": state or {},
        "summary": {},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / STAGE_FILE, record)
    return record


def update_stage_record(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the run's stage.json (atomically) and return the new record."""
    record = read_stage(run_dir)
    if record is None:
        raise CheckpointError(f"{run_dir} has no {STAGE_FILE} to update")
    record.update(fields)
    write_json(run_dir / STAGE_FILE, record)
    return record


def require_stage(run_dir: Path, stage: str) -> dict[str, Any]:
    """The stage record of a run written by `stage`, for `--resume` (CheckpointError if the
    directory holds no such run)."""
    require_run(run_dir)
    record = read_stage(run_dir)
    if record is None:
        raise CheckpointError(
            f"{run_dir} has no {STAGE_FILE}: it was not written by `lmlab {stage}` "
            "(or predates resumable stages); start a new run instead"
        )
    if record["stage"] != stage:
        raise CheckpointError(
            f"{run_dir} is a {record['stage']} run, not a {stage} run; resume it with "
            f"`lmlab {record['stage']} --resume {run_dir}`"
        )
    return record
