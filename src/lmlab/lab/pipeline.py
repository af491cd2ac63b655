"""`lmlab run`: take a model through every stage of its life, then write the report card.

A lab run is a folder:

    lab.json        the preset's full settings, the steps asked for, each step's status, wall
                    time and summary, and where it ran (version, commit, hardware)
    <step>/         one folder per step (training steps are ordinary run directories)
    report.md       the report card, and report.html (self-contained: plots embedded)

Steps run in their one order (`lmlab.lab.steps.STEPS`); a step's prerequisites must be in the
same run, asked for or already done. `--resume` skips finished steps and resumes the cut one;
every figure is then the one an uninterrupted run gives (training resumes exactly on CPU, and
everything else is seeded and recomputed).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from lmlab.lab.config import LabConfig
from lmlab.lab.report import write_report
from lmlab.lab.steps import STEP_NAMES, STEPS, Lab, Step
from lmlab.runs import LOCK_FILE, RunDirError, check_output_dir, lock_dir, write_json

LAB_FILE = "lab.json"


class LabError(ValueError):
    """A lab run that cannot start or continue (shown to the user as one line)."""


@dataclass
class LabResult:
    out: Path
    record: dict[str, Any]


def select_steps(cfg: LabConfig, names: Sequence[str] | None, done: set[str]) -> list[Step]:
    """The steps to run: `names` (default: every step the preset includes), checked for
    unknown names, order, steps the preset leaves out and missing prerequisites."""
    included = [s for s in STEPS if s.enabled(cfg)]
    if names is None:
        return included
    by_name = {s.name: s for s in STEPS}
    for n in names:
        if n not in by_name:
            raise LabError(f"unknown stage {n!r}; stages: {', '.join(STEP_NAMES)}")
    if len(set(names)) != len(names):
        raise LabError(f"a stage is named twice in {','.join(names)}")
    positions = [STEP_NAMES.index(n) for n in names]
    if positions != sorted(positions):
        raise LabError(
            f"stages out of order: {','.join(names)}; the order is {','.join(STEP_NAMES)}"
        )
    chosen = [by_name[n] for n in names]
    for s in chosen:
        if not s.enabled(cfg):
            raise LabError(f"preset {cfg.name!r} has no {s.name} stage")
        missing = [r for r in s.requires if r not in names and r not in done]
        if missing:
            raise LabError(f"stage {s.name} needs {', '.join(missing)} first (add it to --stages)")
    return chosen


def environment() -> dict[str, Any]:
    """Where the run ran: lmlab version and commit, Python, torch, CPU, cores, GPU."""
    try:
        lmlab_version = version("lmlab")
    except PackageNotFoundError:
        lmlab_version = "unknown"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "lmlab": lmlab_version,
        "commit": commit or "unknown",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _open(out: Path, cfg: LabConfig | None, resume: bool) -> dict[str, Any]:
    """The lab record of `out`: a new one, or (with `resume`) the one on disk."""
    path = out / LAB_FILE
    if resume:
        if not path.is_file():
            raise LabError(f"{out} is not a lab run (no {LAB_FILE}); nothing to resume")
        try:
            record = _load(path)
            LabConfig.from_dict(record["config"])
        except (ValueError, KeyError, TypeError) as e:
            raise LabError(f"{path} is damaged ({e}); start a new lab run") from None
        return record
    if path.is_file():
        raise LabError(f"{out} already holds a lab run; continue it with --resume {out}")
    check_output_dir(out)
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise RunDirError(f"{out} exists and is not an empty folder; choose another --out")
    assert cfg is not None
    return {
        "preset": cfg.name,
        "config": cfg.to_dict(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "environment": environment(),
        "stages": [],
        "steps": {},
    }


def _load(path: Path) -> dict[str, Any]:
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not isinstance(record.get("steps"), dict):
        raise ValueError("not a lab record")
    return record


def run_lab(
    out: Path,
    cfg: LabConfig | None = None,
    stages: Sequence[str] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    say: Callable[[str], None] = print,
) -> LabResult:
    """Run (or, with `resume`, continue) a lab run in `out`, then write its report card,
    holding the lab folder's lock (`lmlab.runs.lock_dir`) throughout."""
    _open(out, cfg, resume)  # checked before the folder is locked (and so created)
    with lock_dir(out):
        return _run_lab(out, cfg, stages, resume, show_progress, say)


def _run_lab(
    out: Path,
    cfg: LabConfig | None,
    stages: Sequence[str] | None,
    resume: bool,
    show_progress: bool,
    say: Callable[[str], None],
) -> LabResult:
    record = _open(out, cfg, resume)
    cfg = LabConfig.from_dict(record["config"])
    done = {n for n, s in record["steps"].items() if s.get("status") == "done"}
    if resume and stages is None and record["stages"]:
        stages = record["stages"]
    steps = select_steps(cfg, stages, done)
    record["stages"] = [s.name for s in steps]
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / LAB_FILE, record)
    lab = Lab(out, cfg, show_progress)
    todo = [s for s in steps if s.name not in done]
    expected = {s.name: cfg.minutes.get(s.name, 1.0) * 60 for s in todo}
    t0 = time.perf_counter()
    for i, step in enumerate(steps, 1):
        tag = f"[{i}/{len(steps)}] {step.name}"
        if step.name in done:
            say(f"{tag}: done earlier ({_clock(record['steps'][step.name]['seconds'])})")
            continue
        elapsed = time.perf_counter() - t0
        left = sum(expected[s.name] for s in todo[todo.index(step) :])
        spent = sum(expected[s.name] for s in todo[: todo.index(step)])
        # the preset's expected minutes, scaled by how this machine has kept to them so far
        # (once a minute's worth has run: one quick step says little about the rest)
        pace = elapsed / spent if spent >= 60 and elapsed > 0 else 1.0
        say(f"{tag}: {step.doc}  (elapsed {_clock(elapsed)}, about {_clock(left * pace)} to go)")
        started = time.perf_counter()
        summary = step.run(lab)
        seconds = time.perf_counter() - started
        record["steps"][step.name] = {
            "status": "done",
            "seconds": round(seconds, 2),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "summary": summary,
        }
        write_json(out / LAB_FILE, record)
        say(f"{tag}: done in {_clock(seconds)}")
    paths = write_report(out, record)
    say(f"report: {paths[0]} and {paths[1]}  (total {_clock(time.perf_counter() - t0)})")
    return LabResult(out, record)
