"""What the `lmlab scaling` commands hand back: a source (sweep directory or points CSV) fitted
and written up (summary.json and PNGs), predictions for a target budget, the plan of a
validation run at the predicted optimum, and the tables and lines the commands print."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from rich.table import Table

from lmlab.runs import write_atomic
from lmlab.scaling.fit import (
    Fits,
    Points,
    ScalingError,
    fit_all,
    inference_optimum,
    read_points_csv,
    summary,
)
from lmlab.scaling.plan import (
    PLAN_FILE,
    load_plan,
    nearest_shape,
    plan_config,
    plan_run,
    write_plan,
)
from lmlab.scaling.plots import plot_all
from lmlab.scaling.results import sweep_points


def load_points(src: Path, count: str | None = None) -> Points:
    """Points from a sweep directory (with curves; N counted as `count` says) or a CSV."""
    if src.is_dir():
        return sweep_points(src, count)
    if not src.exists():
        raise ScalingError(f"{src} does not exist; give a sweep directory or a points CSV")
    if count not in (None, "total"):
        raise ScalingError("--count applies to sweep directories; a CSV's params column is N")
    return read_points_csv(src)


def default_out(src: Path) -> Path:
    return src / "fit" if src.is_dir() else src.with_name(src.stem + "-fit")


def fit_source(
    src: Path,
    out: Path | None = None,
    count: str | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
    plots: bool = True,
    n_starts: int = 32,
) -> tuple[dict[str, Any], Points, Fits]:
    """Fit all approaches to `src`, write OUT/summary.json (and the PNGs); return the summary."""
    if n_bootstrap < 0 or n_starts < 1:
        raise ScalingError("need --bootstrap >= 0 and --starts >= 1")
    pts = load_points(src, count)
    fits = fit_all(pts, n_bootstrap, seed, n_starts)
    used = count or (load_plan(src)["settings"].get("count", "total") if src.is_dir() else "total")
    result = summary(pts, fits, str(src), used)
    out = out or default_out(src)
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        pngs = plot_all(pts, fits, out, float(pts.budget.max()) * 4)
        result["plots"] = [str(p) for p in pngs]

    write_atomic(out / "summary.json", json.dumps(result, indent=2) + "\n")
    return result, pts, fits


def predict(fits: Fits, budget: float, inference_tokens: float = 0.0) -> dict[str, Any]:
    """N_opt, D_opt from every approach at `budget`; Approach 3's loss, tokens per parameter
    with its interval, and the inference-aware optimum for `inference_tokens` served tokens."""
    if not math.isfinite(budget) or budget <= 0:
        raise ScalingError(f"--budget must be a positive number, got {budget}")
    out: dict[str, Any] = {"budget": budget, "inference_tokens": inference_tokens}
    for name in ("approach1", "approach2"):
        f = getattr(fits, name)
        if f is not None:
            out[name] = {"n_opt": float(f.n_opt(budget)), "d_opt": float(f.d_opt(budget))}
    f3 = fits.approach3
    if f3 is not None:
        n, d = f3.optimum(budget)
        ci = f3.tokens_per_param_interval(budget)
        out["approach3"] = {
            "n_opt": float(n),
            "d_opt": float(d),
            "loss": float(f3.loss(n, d)),
            "tokens_per_param": float(d / n),
            "tokens_per_param_interval": ci and list(ci),
        }
        inf = inference_optimum(f3, budget, inference_tokens)
        out["inference_aware"] = {
            **dataclasses.asdict(inf),
            "n_ratio": inf.n / float(n),
            "d_train_ratio": inf.d_train / float(d),
            "saving": 1 - inf.cost / inf.chinchilla_cost,
        }
    return out


def plan_validation(
    src: Path, fits: Fits, budget: float, out: Path, count: str | None = None
) -> dict[str, Any]:
    """A one-run sweep in `out`: the family shape nearest Approach 3's N_opt at `budget`,
    trained with the sweep's settings, with the loss Approach 3 predicts for its exact N, D."""
    if fits.approach3 is None:
        raise ScalingError("a validation run needs an Approach 3 fit")
    plan = load_plan(src)
    cfg = plan_config(plan)
    if count:
        cfg = dataclasses.replace(cfg, count=count)
    n_opt, _ = fits.approach3.optimum(budget)
    shape = nearest_shape(cfg, float(n_opt))
    run = plan_run(
        cfg, budget, shape, f"C{budget:.2e}_L{shape.n_layer:02d}_d{shape.d_model:04d}", {}
    )
    run_d = dataclasses.asdict(run)
    run_d["predicted_loss"] = float(fits.approach3.loss(run.params, run.tokens))
    val = {**plan, "runs": [run_d], "validates": str(src), "settings": dataclasses.asdict(cfg)}
    if (out / PLAN_FILE).is_file():
        old = load_plan(out)
        if old["runs"][0]["name"] != run.name:
            raise ScalingError(f"{out} already holds another validation run; choose another --out")
    write_plan(val, out)
    return run_d


# --- what the commands print ------------------------------------------------------------------


def plan_table(plan: dict[str, Any], path: Path) -> Table:
    """One row per planned run: budget, N, D, tokens per parameter, steps, how far its FLOPs
    land from the budget, and the estimated wall time."""
    table = Table(title=f"lmlab scaling plan: {path}")
    for col in ("run", "budget", "N", "D", "D/N", "steps", "FLOPs vs budget", "est."):
        table.add_column(col, justify="right")
    for r in plan["runs"]:
        est = r["est_seconds"]
        table.add_row(
            r["name"],
            f"{r['budget']:.2g}",
            f"{r['params']:,}",
            f"{r['tokens']:,}",
            f"{r['tokens'] / r['params']:.1f}",
            str(r["steps"]),
            f"{r['flops'] / r['budget'] - 1:+.1%}",
            "-" if est is None else f"{est / 60:.1f} min",
        )
    return table


def plan_estimate(plan: dict[str, Any]) -> str:
    """The plan's estimated total training time, one line."""
    total = sum(r["est_seconds"] or 0 for r in plan["runs"])
    return f"estimated total: {total / 60:.1f} CPU-process minutes at 1 worker"


def runs_table(rows: list[dict[str, Any]], sweep: Path) -> Table:
    """One row per finished run: N, D, validation loss, the predicted loss (validation runs)
    and the wall time."""
    table = Table(title=f"lmlab scaling run: {sweep}")
    for col in ("run", "N", "D", "val loss", "predicted", "wall"):
        table.add_column(col, justify="right")
    for r in rows:
        pred = r.get("predicted_loss")
        table.add_row(
            r["run"],
            f"{r['params']:,}",
            f"{r['tokens']:,}",
            f"{r['loss']:.4f}",
            "-" if pred is None else f"{pred:.4f} ({r['loss'] / pred - 1:+.1%})",
            "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}s",
        )
    return table


def fit_lines(result: dict[str, Any]) -> list[str]:
    """The fitted exponents of each approach (or why it failed), and Approach 3's parameters
    with the interval of a when bootstrapped."""
    lines = []
    for name in ("approach1", "approach2", "approach3"):
        r = result[name]
        fitted = f"error: {r['error']}" if "error" in r else f"a = {r['a']:.3f}  b = {r['b']:.3f}"
        lines.append(f"{name}: {fitted}")
    r = result.get("approach3", {})
    if "intervals" in r:
        lines.append(
            f"approach3: E={r['E']:.3f} A={r['A']:.4g} B={r['B']:.4g} "
            f"alpha={r['alpha']:.3f} beta={r['beta']:.3f}  95% CI a: {r['intervals']['a']}"
        )
    return lines
