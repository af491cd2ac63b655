"""A sweep's runs on disk: where each lives (SWEEP/runs/NAME), how far it got, and the results
of the finished ones — SWEEP/results.jsonl (one row per finished run with its validation-loss
curve) and SWEEP/points.csv (the table `lmlab scaling fit` reads). Training the runs is
`lmlab.experiments.sweep`'s job (it sits above training; this module does not).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from lmlab.config import RunConfig
from lmlab.runs import (
    CheckpointError,
    inside,
    latest_checkpoint,
    read_checkpoint_state,
    write_atomic,
)
from lmlab.scaling.fit import Points, ScalingError
from lmlab.scaling.plan import load_plan

POINT_COLUMNS = (
    "run",
    "budget",
    "params",
    "params_total",
    "params_non_embedding",
    "tokens",
    "flops",
    "loss",
    "wall_s",
    "predicted_loss",
)


def run_dir(sweep: Path, name: str) -> Path:
    """SWEEP/runs/NAME, for a run name read from plan.json: refused unless it stays there."""
    return inside(sweep / "runs", name, "run name")


def _checkpoint_step(path: Path) -> int | None:
    try:
        ckpt = latest_checkpoint(path)
    except CheckpointError:
        return None
    return int(read_checkpoint_state(ckpt)["step"])


def run_status(sweep: Path, run: dict[str, Any], corpus: str) -> str:
    """'done', 'partial' (resumable), 'broken' (started, no checkpoint) or 'todo'."""
    path = run_dir(sweep, run["name"])
    if not path.exists():
        return "todo"
    if not (path / "config.json").is_file():
        return "broken"
    cfg = RunConfig.load(path / "config.json")
    if cfg.data.corpus != corpus:
        raise ScalingError(
            f"{path} was trained on corpus {cfg.data.corpus!r} but the sweep's plan says "
            f"{corpus!r}; this sweep directory mixes corpora, use a fresh one"
        )
    step = _checkpoint_step(path)
    if step is None:
        return "broken"
    return "done" if step >= run["steps"] else "partial"


def collect(sweep: Path) -> list[dict[str, Any]]:
    """One row per finished run: the plan's numbers, the final val loss and the loss curve."""
    plan = load_plan(sweep)
    rows = []
    for r in plan["runs"]:
        if run_status(sweep, r, plan["corpus"]) != "done":
            continue
        path = run_dir(sweep, r["name"])
        metrics = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x]
        curve = [
            {
                "step": m["step"],
                "tokens": m["tokens"],
                "val_loss": m["val_loss"],
                "train_loss": m["train_loss"],
            }
            for m in metrics
            if "val_loss" in m and m["step"] <= r["steps"]
        ]
        if not curve or curve[-1]["step"] != r["steps"]:
            continue
        timing = path / "scaling.json"
        rows.append(
            {
                "run": r["name"],
                "budget": r["budget"],
                "params": r["params"],
                "params_total": r["params_total"],
                "params_non_embedding": r["params_non_embedding"],
                "tokens": r["tokens"],
                "flops": r["flops"],
                "loss": curve[-1]["val_loss"],
                "wall_s": json.loads(timing.read_text())["wall_s"] if timing.is_file() else None,
                **({"predicted_loss": r["predicted_loss"]} if "predicted_loss" in r else {}),
                "curve": curve,
            }
        )
    return rows


def write_results(sweep: Path) -> list[dict[str, Any]]:

    rows = collect(sweep)
    write_atomic(sweep / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, POINT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(sweep / "points.csv", buf.getvalue())
    return rows


def sweep_points(sweep: Path, count: str | None = None) -> Points:
    """The finished runs of a sweep as Points (with curves), N counted as `count` says
    (default: as the plan counted it)."""
    plan = load_plan(sweep)
    rows = collect(sweep)
    if not rows:
        raise ScalingError(f"{sweep} has no finished runs yet; run `lmlab scaling run {sweep}`")
    count = count or plan["settings"].get("count", "total")
    key = {"total": "params_total", "non_embedding": "params_non_embedding"}.get(count)
    if key is None:
        raise ScalingError(f"--count must be total or non_embedding, got {count!r}")
    return Points(
        np.array([r[key] for r in rows], dtype=np.float64),
        np.array([r["tokens"] for r in rows], dtype=np.float64),
        np.array([r["loss"] for r in rows]),
        np.array([r["flops"] for r in rows]),
        np.array([r["budget"] for r in rows]),
        [r["run"] for r in rows],
        {r["run"]: np.array([[c["tokens"], c["val_loss"]] for c in r["curve"]]) for r in rows},
    )
