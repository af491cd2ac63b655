"""Run directories: what a run is on disk, and every check, read and atomic write of one.

Every stage (pretraining, SFT, reward model, DPO, GRPO, PPO, an import) writes one directory:

    config.json        the RunConfig (model shape, loop settings, data)
    tokenizer.json     the tokenizer the model was trained with
    stage.json         which stage wrote the run, from which base, with which settings; its
                       status ("running" or "done"), the state a resume needs, and its summary
    metrics.jsonl      one JSON row per logged step
    checkpoints/step_NNNNNN/{model.safetensors, optim.pt, state.json, rng.pt, manifest.json}
    checkpoints/latest the name of the newest complete checkpoint
    .lock              present while a process writes the run (`lock_dir`)

This module sits at the bottom of the package (it imports no other lmlab layer), so the engine,
evaluation, scaling and the server find runs without reaching into training code. Writes that
must never be seen half-done (stage.json, reports, `latest`) go through `write_atomic`.

Files in a run are data, never code: optimizer and RNG state are read with
`torch.load(weights_only=True)` (tensors, numbers, strings and containers only), every path read
from a file must stay inside the folder it names a file of (`inside`), a checkpoint's
`manifest.json` holds the SHA-256 of each of its files and every read checks it, and weights
that are not finite are neither written nor read. One process at a time writes a run: writers
hold an advisory lock (`fcntl.flock`) on `RUN/.lock`, which names the holder's pid.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
STAGE_FILE = "stage.json"
METRICS_FILE = "metrics.jsonl"
REWARD_FILE = "reward.json"
"""Written by a reward-model run (`lmlab rm`) beside its usual files: what marks it as one."""
CKPT_DIR = "checkpoints"
LOCK_FILE = ".lock"
MANIFEST_FILE = "manifest.json"
"""A checkpoint's file -> SHA-256 table, written last and checked on every read."""
CHECKPOINT_NAME = re.compile(r"step_[0-9]{6,}")


class RunDirError(ValueError):
    """An output directory that cannot take this run (shown to the user as one line)."""


class CheckpointError(ValueError):
    """No usable run or checkpoint where one was expected (shown to the user as one line)."""


class LockedError(RunDirError):
    """Another process is writing where this one wants to write."""


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
    """Replace `path` with `text` so that readers see either the old or the new content (a
    failed write, a full disk say, leaves the old content and no temporary file)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """`obj` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


# --- paths read from files ----------------------------------------------------------------------


def inside(folder: Path, name: str, what: str) -> Path:
    """`folder / name` for a `name` read from a file, refused (CheckpointError) unless it is a
    relative path that stays inside `folder` once resolved: a planted `../x`, an absolute path
    or a symlink out of the folder must never make lmlab read, write or delete elsewhere."""
    if not isinstance(name, str) or not name or "\0" in name or Path(name).is_absolute():
        raise CheckpointError(f"{what} {name!r} is not a relative path inside {folder}")
    path = folder / name
    root = folder.resolve()
    if not path.resolve().is_relative_to(root) or path.resolve() == root:
        raise CheckpointError(f"{what} {name!r} leads outside {folder}; refused")
    return path


# --- output checks and locks ----------------------------------------------------------------------


def _entries(folder: Path) -> list[Path]:
    """What a folder holds, its lock file aside."""
    return [p for p in folder.iterdir() if p.name != LOCK_FILE]


def check_output_dir(out: Path) -> None:
    """Refuse, before any work, an output directory that is a file, that another process is
    writing, or where nothing can be created (checked by creating and removing a file in it
    or in its nearest existing parent: permissions alone do not say, e.g. for root)."""
    try:
        if out.exists() and not out.is_dir():
            raise RunDirError(f"output {out} exists and is not a directory")
        check_not_locked(out / LOCK_FILE, str(out))
        _probe_writable(out)
    except OSError as e:  # a name too long, a loop of links...
        raise RunDirError(f"cannot use {out} as an output: {e.strerror or e}") from None


def check_output_file(path: Path) -> None:
    """Refuse, before any work, an output file that is a directory or whose folder is missing
    or cannot be written."""
    try:
        if path.is_dir():
            raise RunDirError(f"cannot write {path}: it is a directory")
        if not path.parent.is_dir():
            raise RunDirError(f"cannot write {path}: folder {path.parent} does not exist")
        _probe_writable(path.parent, path)
    except OSError as e:
        raise RunDirError(f"cannot write {path}: {e.strerror or e}") from None


def _probe_writable(out: Path, shown: Path | None = None) -> None:
    """RunDirError (naming `shown`, default `out`) unless a file can be made in `out`, or in
    its nearest existing parent when `out` does not exist yet."""
    shown = shown or out
    base = out
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise RunDirError(f"cannot create {shown}: {base} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".lmlab-probe-")
    except OSError as e:
        raise RunDirError(
            f"cannot write {shown}: {base} is not writable ({e.strerror or e})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_empty_output(out: Path) -> None:
    """`check_output_dir`, and refuse a directory that holds anything (nothing is ever
    overwritten)."""
    check_output_dir(out)
    if out.is_dir() and _entries(out):
        raise RunDirError(f"{out} is not empty; choose another --out (nothing was overwritten)")


def check_new_run_dir(out: Path, command: str = "pretrain") -> None:
    """Refuse an output directory that holds anything (nothing is ever overwritten), is being
    written by another process, or cannot be written."""
    check_output_dir(out)
    if (out / CONFIG_FILE).exists():
        raise RunDirError(
            f"{out} already holds a run; continue it with `lmlab {command} --resume {out}` "
            "or choose another --out"
        )
    if out.exists() and _entries(out):
        raise RunDirError(f"{out} is not empty; choose another --out")


@dataclass
class _Held:
    fd: int
    count: int
    made: Path | None
    """The folder `lock_dir` created for this lock (removed on release if still empty)."""


_HELD: dict[str, _Held] = {}
"""The locks this process holds: lock file (resolved) -> its descriptor and how many holders
within this process (a lab run's steps and a stage inside one command may take one twice)."""


class Lock:
    """An advisory lock this process holds; `release()` or leaving its `with` block lets go."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self._key, self._held = path, key, True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        held = _HELD[self._key]
        held.count -= 1
        if held.count == 0:
            del _HELD[self._key]
            # unlink while still holding it: a process that opened the old file finds, once
            # it gets the lock, that the path no longer names it, and opens the new one
            self.path.unlink(missing_ok=True)
            os.close(held.fd)
            if held.made is not None:  # a start that failed before writing leaves nothing
                with contextlib.suppress(OSError):
                    held.made.rmdir()

    def __del__(self) -> None:  # a stage that failed lets go once it is collected
        with contextlib.suppress(Exception):
            self.release()

    def __enter__(self) -> Lock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _holder(fd: int) -> str:
    """The pid a lock file names (its holder writes it once it has the lock)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"


def _locked_error(what: str, fd: int) -> LockedError:
    return LockedError(
        f"{what} is being written by another lmlab process (pid {_holder(fd)}); wait for it "
        "to finish or choose another --out"
    )


def acquire_lock(lock_file: Path, what: str, made: Path | None = None) -> Lock:
    """Take the advisory lock `lock_file` (created, holding this process's pid) without
    waiting: LockedError naming the holder's pid if another process has it. The kernel drops
    the lock when its holder exits, however it exits, so a crash never leaves a stale lock.
    Within one process the lock is re-entrant (a lab run's step inside the lab's lock)."""
    key = str(lock_file.resolve())
    if key in _HELD:
        _HELD[key].count += 1
        return Lock(lock_file, key)
    while True:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err = _locked_error(what, fd)
            os.close(fd)
            if made is not None:
                with contextlib.suppress(OSError):
                    made.rmdir()
            raise err from None
        try:
            current = os.stat(lock_file).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # its holder released and removed it while we waited: take the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _HELD[key] = _Held(fd, 1, made)
    return Lock(lock_file, key)


def lock_dir(folder: Path) -> Lock:
    """Lock a run, sweep or lab folder for writing: `FOLDER/.lock`. A folder this creates is
    removed again on release if nothing was written to it."""
    made = None if folder.exists() else folder
    folder.mkdir(parents=True, exist_ok=True)
    return acquire_lock(folder / LOCK_FILE, str(folder), made)


def lock_file(path: Path) -> Lock:
    """Lock an output file for writing (a preference JSONL): `.NAME.lock` beside it."""
    return acquire_lock(path.with_name(f".{path.name}.lock"), str(path))


def check_not_locked(path: Path, what: str) -> None:
    """LockedError naming the holder if another process holds the lock file `path`; nothing
    is taken."""
    if str(path.resolve()) in _HELD or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _locked_error(what, fd) from None
    finally:
        os.close(fd)


# --- runs and checkpoints -----------------------------------------------------------------------


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
    """The newest complete checkpoint of a run, or CheckpointError naming the problem. The
    `latest` pointer must name a checkpoint folder of this run (`step_NNNNNN`), nothing else."""
    pointer = run_dir / CKPT_DIR / "latest"
    if not pointer.is_file():
        raise CheckpointError(f"{run_dir} holds no checkpoint (no {CKPT_DIR}/latest)")
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {pointer}: {e}") from None
    if not CHECKPOINT_NAME.fullmatch(name):
        raise CheckpointError(
            f"{pointer} names {name[:80]!r}, not a checkpoint of this run (step_NNNNNN); refused"
        )
    path = inside(run_dir / CKPT_DIR, name, "checkpoint")
    if not (path / "state.json").is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete")
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_file(checkpoint: Path, name: str) -> Path:
    """`checkpoint / name` after checking it against the checkpoint's manifest (CheckpointError
    if it is missing or its SHA-256 differs: a truncated, zeroed or edited file). Checkpoints
    written before manifests existed have none and are read unchecked."""
    path = checkpoint / name
    if not path.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} lacks {name}")
    manifest = checkpoint / MANIFEST_FILE
    if not manifest.is_file():
        return path
    try:
        sums = json.loads(manifest.read_text())["sha256"]
        expected = sums[name]
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"{manifest} is damaged or does not list {name}") from None
    if sha256_file(path) != expected:
        raise CheckpointError(
            f"{path} does not match its checksum in {MANIFEST_FILE}: the file is damaged "
            "(truncated, overwritten or edited)"
        )
    return path


class NonFiniteError(ValueError):
    """Weights holding NaN or infinity (shown to the user as one line)."""


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


# numpy's RNG state is a tuple holding an ndarray, which `weights_only` refuses; checkpoints
# store it as a tensor (`rng_state`). Older checkpoints pickled the tuple itself: these are the
# only classes their rng.pt may name (the allow-list torch documents for numpy arrays).
_NUMPY_CORE = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed it
_LEGACY_NUMPY = [
    _NUMPY_CORE.multiarray._reconstruct,
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


def rng_state() -> dict[str, Any]:
    """Every random generator a training step draws from (torch, CUDA, numpy, python), as
    tensors, numbers and tuples only (what `torch.load(weights_only=True)` reads back)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": (version, torch.tensor(internal, dtype=torch.int64), gauss_next),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    np.random.set_state(numpy_state)
    version, internal, gauss_next = state["python"]
    if isinstance(internal, torch.Tensor):
        internal = tuple(int(x) for x in internal.tolist())
    random.setstate((version, internal, gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read_state_file(checkpoint: Path, name: str) -> Any:
    """optim.pt or rng.pt of a checkpoint, checked against its manifest and unpickled with
    `weights_only=True`: tensors, numbers, strings and containers, never code. A file that
    names anything else (a planted payload) is refused with CheckpointError."""
    path = verify_file(checkpoint, name)
    allowed = _LEGACY_NUMPY if name == "rng.pt" else []
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError... by case
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} cannot be loaded as data (damaged, or it holds objects other than "
            f"tensors and numbers): {first}"
        ) from None


def write_checkpoint(
    run_dir: Path,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any] | None,
    state: dict[str, Any],
    keep: int = 2,
    aliases: dict[str, str] | None = None,
) -> Path:
    """Write checkpoint `state["step"]` atomically and prune all but the newest `keep`.

    The files go to a temporary folder, each fsynced, with a manifest of their SHA-256 sums,
    which is then renamed into place; only after that does `latest` move (temp file + fsync +
    rename). A crash at any point leaves `latest` naming the previous complete checkpoint; a
    failed write (a full disk) removes the temporary folder and raises CheckpointError. Weights
    holding NaN or infinity are refused (NonFiniteError): a diverged model is never saved over
    a good one. Tied weights (`aliases`: name -> the name it shares storage with) are stored
    once.
    """
    tensors = {
        k: v.detach().contiguous() for k, v in model_state.items() if k not in (aliases or {})
    }
    bad = first_non_finite(tensors)
    if bad is not None:
        raise NonFiniteError(
            f"weight {bad} holds NaN or infinity at step {state['step']}; not checkpointed "
            f"(the last good checkpoint of {run_dir} is kept)"
        )
    root = run_dir / CKPT_DIR
    name = f"step_{state['step']:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(tensors, str(tmp / "model.safetensors"))
        if optim_state is not None:
            torch.save(optim_state, tmp / "optim.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        sums = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
        (tmp / MANIFEST_FILE).write_text(json.dumps({"sha256": sums}, indent=2) + "\n")
        fsync_tree(tmp)
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
        write_atomic(root / "latest", name)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = os.strerror(e.errno) if e.errno else str(e)
        if e.errno == errno.ENOSPC:
            reason += " (free some space, then resume)"
        raise CheckpointError(
            f"cannot write checkpoint {name} in {root}: {reason}; the previous checkpoint is kept"
        ) from None
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
    """The weights of a checkpoint folder, with tied names (`aliases`) filled in again.
    CheckpointError for a file that fails its checksum or is not a safetensors file, and for
    weights holding NaN or infinity."""
    path = verify_file(checkpoint, "model.safetensors")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from None
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(f"{path} holds NaN or infinity (in {bad}); refused")
    for alias, name in (aliases or {}).items():
        if name in tensors:
            tensors[alias] = tensors[name]
    return tensors


def read_checkpoint_state(checkpoint: Path) -> dict[str, Any]:
    """The loop state saved with a checkpoint (step, tokens, extra stage state)."""
    path = verify_file(checkpoint, "state.json")
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{path} is not valid JSON ({e}); the checkpoint is damaged"
        ) from None
    ok = isinstance(state, dict) and all(
        isinstance(state.get(k), int) and not isinstance(state.get(k), bool) and state[k] >= 0
        for k in ("step", "tokens")
    )
    if not ok:
        raise CheckpointError(f"{path} is not a checkpoint state (needs integer step and tokens)")
    return state


def has_checkpoint(run_dir: Path) -> bool:
    """Whether the run has written a checkpoint (its `latest` pointer, moved last, exists); a
    pointer that names no usable checkpoint is an error, not "no checkpoint": a resume must
    never quietly start over on a damaged run."""
    if not (run_dir / CKPT_DIR / "latest").is_file():
        return False
    latest_checkpoint(run_dir)
    return True


def check_checkpoint(checkpoint: Path) -> None:
    """Read every file of a checkpoint as a resume will, changing nothing: CheckpointError
    naming the first damaged one. A resume calls this before it writes anything."""
    read_checkpoint_state(checkpoint)
    read_weights(checkpoint)
    for name in ("optim.pt", "rng.pt"):
        if (checkpoint / name).is_file():
            read_state_file(checkpoint, name)


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
