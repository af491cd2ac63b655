"""Scaling plots (PNG, matplotlib's Agg backend): IsoFLOP curves with their parabolas, N_opt and
D_opt against C for every approach, the fitted loss surface over the data, and the shift of the
optimum when inference is counted (Sardana et al. 2023)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from lmlab.scaling.fit import Fits, Points, inference_optimum


def _figure(w: float, h: float, cols: int = 1) -> tuple[Figure, Any]:
    # Figure() without pyplot: no global state, no GUI backend, PNGs through Agg.
    fig = Figure(figsize=(w, h))
    return fig, fig.subplots(1, cols)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def isoflop(pts: Points, fits: Fits, path: Path) -> Path:
    fig, ax = _figure(6.4, 4.4)
    budgets = np.unique(pts.budget)
    colors = colormaps["viridis"](np.linspace(0, 0.9, len(budgets)))
    profiles = {p.budget: p for p in fits.approach2.profiles} if fits.approach2 else {}
    for c, color in zip(budgets, colors, strict=True):
        m = pts.budget == c
        ax.scatter(pts.params[m], pts.loss[m], color=color, label=f"C = {c:.2g}", zorder=3)
        prof = profiles.get(float(c))
        if prof is not None:
            x = np.linspace(np.log(pts.params[m].min()) - 0.3, np.log(pts.params[m].max()) + 0.3)
            ax.plot(np.exp(x), np.polyval(prof.n_coef, x), color=color)
            ax.scatter(
                [prof.n_opt],
                [prof.loss_opt],
                color=color,
                marker="*",
                s=160,
                edgecolor="k",
                zorder=4,
            )
    ax.set(
        xscale="log",
        xlabel="parameters N",
        ylabel="final validation loss",
        title="IsoFLOP profiles (Approach 2); stars: fitted minima",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def frontier(pts: Points, fits: Fits, path: Path) -> Path:
    fig, axes = _figure(10, 4.2, cols=2)
    c = np.geomspace(pts.flops.min() / 3, pts.flops.max() * 10, 50)
    for ax, which in zip(axes, ("N", "D"), strict=True):
        if fits.approach1:
            law = fits.approach1.n_opt if which == "N" else fits.approach1.d_opt
            env = fits.approach1.envelope
            ax.scatter(env[:, 0], env[:, 2 if which == "N" else 3], s=10, color="C0", alpha=0.5)
            ax.plot(c, law(c), color="C0", label=f"Approach 1 ({law.exponent:.3f})")
        if fits.approach2:
            law = fits.approach2.n_opt if which == "N" else fits.approach2.d_opt
            prof = fits.approach2.profiles
            ax.scatter(
                [p.budget for p in prof],
                [p.n_opt if which == "N" else p.d_opt for p in prof],
                color="C1",
            )
            ax.plot(c, law(c), color="C1", label=f"Approach 2 ({law.exponent:.3f})")
        if fits.approach3:
            f3 = fits.approach3
            y = f3.optimum(c)[0 if which == "N" else 1]
            ax.plot(c, y, color="C2", label=f"Approach 3 ({f3.a if which == 'N' else f3.b:.3f})")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="training FLOPs C",
            ylabel=f"{which}_opt",
            title=f"compute-optimal {which} (exponent)",
        )
        ax.legend(fontsize=8)
    return _save(fig, path)


def surface(pts: Points, fits: Fits, path: Path) -> Path | None:
    if not fits.approach3:
        return None
    f3 = fits.approach3
    fig, ax = _figure(6.4, 4.8)
    n = np.geomspace(pts.params.min() / 2, pts.params.max() * 2, 120)
    d = np.geomspace(pts.tokens.min() / 2, pts.tokens.max() * 2, 120)
    nn, dd = np.meshgrid(n, d)
    levels = np.linspace(pts.loss.min() * 0.97, pts.loss.max() * 1.03, 14)
    cs = ax.contourf(nn, dd, f3.loss(nn, dd), levels=levels, cmap="viridis", extend="both")
    ax.scatter(
        pts.params,
        pts.tokens,
        c=pts.loss,
        cmap="viridis",
        norm=cs.norm,
        edgecolor="w",
        s=40,
        zorder=3,
    )
    c = np.geomspace(pts.flops.min() / 2, pts.flops.max() * 4, 40)
    ax.plot(*f3.optimum(c), color="w", ls="--", label="compute-optimal (Approach 3)")
    fig.colorbar(cs, label="loss")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="parameters N",
        ylabel="tokens D",
        xlim=(n[0], n[-1]),
        ylim=(d[0], d[-1]),
        title=f"L = {f3.E:.2f} + {f3.A:.3g}/N^{f3.alpha:.3f} + {f3.B:.3g}/D^{f3.beta:.3f}",
    )
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def inference_shift(fits: Fits, budget: float, path: Path) -> Path | None:
    """N and D_train of the cheapest model reaching the compute-optimal loss at `budget`, as the
    tokens served over its life grow."""
    if not fits.approach3:
        return None
    f3 = fits.approach3
    n0, d0 = f3.optimum(budget)
    ratios = np.geomspace(0.01, 1000, 40)
    res = [inference_optimum(f3, budget, r * float(d0)) for r in ratios]
    fig, ax = _figure(6.4, 4.2)
    ax.plot(ratios, [r.n / n0 for r in res], label="N / N_chinchilla")
    ax.plot(ratios, [r.d_train / d0 for r in res], label="D_train / D_chinchilla")
    ax.plot(ratios, [r.cost / r.chinchilla_cost for r in res], label="total FLOPs ratio")
    ax.axhline(1, color="k", lw=0.5)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="inference tokens / D_chinchilla",
        title=f"inference-aware optimum at C = {budget:.2g} (same loss)",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_all(pts: Points, fits: Fits, out: Path, budget: float) -> list[Path]:
    paths = [
        isoflop(pts, fits, out / "isoflop.png"),
        frontier(pts, fits, out / "frontier.png"),
        surface(pts, fits, out / "surface.png"),
        inference_shift(fits, budget, out / "inference.png"),
    ]
    return [p for p in paths if p is not None]
