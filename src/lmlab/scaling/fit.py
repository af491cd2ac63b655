"""Scaling-law fits: Chinchilla's three approaches (Hoffmann et al. 2022) on a points table.

A points table holds one row per finished run (`params` N, `tokens` D, final `loss`, and the
training `flops` C it used) plus, for sweeps, each run's validation-loss curve.

- Approach 1: the lower envelope of the training curves in (C, loss); the run on the envelope
  at each C gives N_opt(C) and D_opt(C), fitted as power laws N_opt ∝ C^a, D_opt ∝ C^b.
- Approach 2: IsoFLOP profiles: per budget a parabola of loss in ln N (and in ln D); the
  minima give the power laws.
- Approach 3: L(N, D) = E + A/N^alpha + B/D^beta fitted by minimising the Huber loss
  (delta 1e-3) of log-loss residuals *summed* over points — averaging makes L-BFGS stop early
  on its tolerance (Besiroglu et al. 2024, "Chinchilla scaling: a replication attempt") —
  with A, B, E parametrised by their logs and log L(N, D) computed by logsumexp, L-BFGS started
  from the best points of a grid of initialisations, and percentile bootstrap intervals.
  Its compute-optimal frontier uses C = k N D with k the table's median FLOPs per
  parameter-token (6 when the table has no FLOPs): N_opt = G (C/k)^a, D_opt = (C/k)^b / G,
  G = (alpha A / (beta B))^(1/(alpha+beta)), a = beta/(alpha+beta), b = alpha/(alpha+beta).
- The inference-aware optimum (Sardana et al. 2023): reach the same loss as the
  compute-optimal model at budget C while minimising k N D_train + (k/3) N D_inference.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, special

from lmlab.scaling.config import ScalingError

HUBER_DELTA = 1e-3
PARAM_NAMES = ("E", "A", "B", "alpha", "beta")


@dataclass
class Points:
    """The data every approach fits: one row per run, with optional loss curves."""

    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    budget: np.ndarray
    """Nominal budget each run belongs to (its IsoFLOP group)."""
    run: list[str]
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    """run -> array of (tokens seen, validation loss) rows along the run."""

    def __post_init__(self) -> None:
        for name in ("params", "tokens", "loss", "flops", "budget"):
            col = np.asarray(getattr(self, name), dtype=np.float64)
            if col.shape != (len(self.run),):
                raise ScalingError(
                    f"column {name!r} has {col.size} values for {len(self.run)} runs"
                )
            if not np.all(np.isfinite(col)) or np.any(col <= 0):
                bad = self.run[int(np.argmax(~np.isfinite(col) | (col <= 0)))]
                raise ScalingError(
                    f"column {name!r} must hold positive finite numbers (bad value in row "
                    f"{bad!r}); fix or drop that row"
                )
            setattr(self, name, col)

    @property
    def k(self) -> float:
        """Median training FLOPs per parameter per token (6 for C = 6ND tables)."""
        return float(np.median(self.flops / (self.params * self.tokens)))

    def subset(self, idx: np.ndarray) -> Points:
        return Points(
            self.params[idx],
            self.tokens[idx],
            self.loss[idx],
            self.flops[idx],
            self.budget[idx],
            [self.run[i] for i in idx],
            self.curves,
        )


def read_points_csv(path: Path) -> Points:
    """Read a CSV with columns params, tokens, loss (optional flops, budget, run).

    Without `flops`, C = 6 N D; without `budget`, runs whose FLOPs lie within 10% of each
    other form one IsoFLOP group.
    """
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise ScalingError(f"cannot read {path}: {e.strerror}") from None
    if not rows:
        raise ScalingError(f"{path} has no rows; expected a header params,tokens,loss and data")
    missing = [c for c in ("params", "tokens", "loss") if c not in rows[0]]
    if missing:
        raise ScalingError(
            f"{path} lacks column(s) {', '.join(missing)}; a points table needs params, tokens, "
            "loss (optional flops, budget, run)"
        )

    def col(name: str) -> np.ndarray:
        out = []
        for i, r in enumerate(rows):
            try:
                out.append(float(r[name]))
            except (TypeError, ValueError):
                raise ScalingError(
                    f"{path} row {i + 2}: {name} {r[name]!r} is not a number"
                ) from None
        return np.array(out)

    params, tokens, loss = col("params"), col("tokens"), col("loss")
    flops = col("flops") if "flops" in rows[0] else 6 * params * tokens
    runs = [r.get("run") or f"row{i + 2}" for i, r in enumerate(rows)]
    for name, c in (("params", params), ("tokens", tokens), ("loss", loss), ("flops", flops)):
        bad = np.flatnonzero(~np.isfinite(c) | (c <= 0))
        if bad.size:
            raise ScalingError(
                f"{path} row {bad[0] + 2}: {name} must be a positive number, got {c[bad[0]]:g}"
            )
    budget = col("budget") if "budget" in rows[0] else group_budgets(flops)
    return Points(params, tokens, loss, flops, budget, runs)


def group_budgets(flops: np.ndarray, tol: float = 0.1) -> np.ndarray:
    """Nominal budget per run: runs within `tol` (relative) of their neighbour share a group,
    labelled by the group's geometric-mean FLOPs."""
    order = np.argsort(flops)
    labels = np.empty_like(flops)
    start = 0
    for i in range(1, len(order) + 1):
        if i == len(order) or flops[order[i]] > flops[order[i - 1]] * (1 + tol):
            grp = order[start:i]
            labels[grp] = math.exp(float(np.mean(np.log(flops[grp]))))
            start = i
    return labels


# --- power laws -------------------------------------------------------------------------------


@dataclass
class PowerLaw:
    """y = coef * x^exponent, fitted by least squares in log-log space."""

    exponent: float
    coef: float

    def __call__(self, x: float | np.ndarray) -> Any:
        with np.errstate(over="ignore", invalid="ignore"):  # a wild fit may overflow: inf
            return self.coef * np.asarray(x, dtype=np.float64) ** self.exponent


def fit_power_law(x: np.ndarray, y: np.ndarray) -> PowerLaw:
    if len(x) < 2 or np.ptp(np.log(x)) == 0:
        raise ScalingError("a power-law fit needs optima at two or more different budgets")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return PowerLaw(float(slope), float(math.exp(intercept)))


# --- Approach 1: lower envelope of training curves ----------------------------------------------


@dataclass
class Approach1:
    n_opt: PowerLaw
    d_opt: PowerLaw
    envelope: np.ndarray
    """Rows (C, loss, N, D) of the envelope points the power laws were fitted to."""

    @property
    def a(self) -> float:
        return self.n_opt.exponent

    @property
    def b(self) -> float:
        return self.d_opt.exponent


def lower_envelope(pts: Points, n_grid: int = 40) -> np.ndarray:
    """(C, loss, N, D) rows on the lower envelope of the runs' loss-vs-FLOPs curves.

    With curves, each run's loss is interpolated (linear in ln C) on a log-spaced grid of C and
    the best run at each grid point is taken (Chinchilla Fig. 2). Runs without a curve count as
    a single point; with no curves at all the envelope is the Pareto front of the final points
    (each point whose loss is below that of every point with less compute).
    """
    tracks = []
    for i, name in enumerate(pts.run):
        per_token = pts.flops[i] / pts.tokens[i]
        curve = pts.curves.get(name)
        if curve is None or len(curve) == 0:
            curve = np.array([[pts.tokens[i], pts.loss[i]]])
        curve = curve[np.argsort(curve[:, 0])]
        tracks.append((np.log(curve[:, 0] * per_token), curve[:, 1], pts.params[i], per_token))
    if all(len(t[0]) == 1 for t in tracks):
        order = np.argsort(pts.flops)
        rows, best = [], math.inf
        for i in order:
            if pts.loss[i] < best:
                best = float(pts.loss[i])
                rows.append((pts.flops[i], pts.loss[i], pts.params[i], pts.tokens[i]))
        return np.array(rows)
    lo = min(float(t[0][0]) for t in tracks)
    hi = max(float(t[0][-1]) for t in tracks)
    rows = []
    for lc in np.linspace(lo, hi, n_grid):
        best = None
        for lcs, losses, n, per_token in tracks:
            if lcs[0] - 1e-9 <= lc <= lcs[-1] + 1e-9:
                loss = float(np.interp(lc, lcs, losses))
                if best is None or loss < best[1]:
                    best = (math.exp(lc), loss, n, math.exp(lc) / per_token)
        if best is not None:
            rows.append(best)
    return np.array(rows)


def approach1(pts: Points, n_grid: int = 40) -> Approach1:
    """Power laws through the envelope. Envelope points held by the smallest or the largest
    model are left out when others remain: there the true optimum may lie outside the ladder,
    which would flatten the fitted exponents."""
    env = lower_envelope(pts, n_grid)
    inner = (env[:, 2] > pts.params.min()) & (env[:, 2] < pts.params.max())
    if len(np.unique(env[inner, 2])) >= 2:
        env = env[inner]
    if len(env) < 2 or len(np.unique(env[:, 2])) < 2:
        raise ScalingError(
            "approach 1 needs the lower envelope to pass through two or more model sizes; "
            "add sizes or budgets"
        )
    return Approach1(fit_power_law(env[:, 0], env[:, 2]), fit_power_law(env[:, 0], env[:, 3]), env)


# --- Approach 2: IsoFLOP parabolas ---------------------------------------------------------------


@dataclass
class IsoFLOP:
    budget: float
    n_coef: np.ndarray
    """Parabola coefficients of loss in ln N (highest power first)."""
    d_coef: np.ndarray
    """Parabola coefficients of loss in ln D."""
    n_opt: float
    d_opt: float
    loss_opt: float
    interior: bool
    """Whether both minima lie inside the sizes the budget sampled (else extrapolated)."""


@dataclass
class Approach2:
    n_opt: PowerLaw
    d_opt: PowerLaw
    profiles: list[IsoFLOP]

    @property
    def a(self) -> float:
        return self.n_opt.exponent

    @property
    def b(self) -> float:
        return self.d_opt.exponent


def isoflop_profile(
    params: np.ndarray, tokens: np.ndarray, loss: np.ndarray, budget: float
) -> IsoFLOP:
    """Fit one IsoFLOP curve: loss = c2 x^2 + c1 x + c0 with x = ln N (and again with ln D)."""
    if len(np.unique(params)) < 3:
        raise ScalingError(
            f"budget {budget:.3g} has {len(np.unique(params))} model size(s); an IsoFLOP parabola "
            "needs 3 or more"
        )
    xn, xd = np.log(params), np.log(tokens)
    cn, cd = np.polyfit(xn, loss, 2), np.polyfit(xd, loss, 2)
    if cn[0] <= 0 or cd[0] <= 0:
        raise ScalingError(
            f"the IsoFLOP curve at budget {budget:.3g} is not convex (no minimum); widen the "
            "range of sizes around the optimum"
        )
    n_x, d_x = -cn[1] / (2 * cn[0]), -cd[1] / (2 * cd[0])
    interior = bool(xn.min() <= n_x <= xn.max() and xd.min() <= d_x <= xd.max())
    return IsoFLOP(
        budget, cn, cd, math.exp(n_x), math.exp(d_x), float(np.polyval(cn, n_x)), interior
    )


def approach2(pts: Points) -> Approach2:
    budgets = np.unique(pts.budget)
    profiles = [
        isoflop_profile(pts.params[m], pts.tokens[m], pts.loss[m], float(c))
        for c in budgets
        for m in [pts.budget == c]
    ]
    c = np.array([p.budget for p in profiles])
    return Approach2(
        fit_power_law(c, np.array([p.n_opt for p in profiles])),
        fit_power_law(c, np.array([p.d_opt for p in profiles])),
        profiles,
    )


# --- Approach 3: parametric loss L(N, D) ------------------------------------------------------


def single_thread_blas() -> contextlib.AbstractContextManager[object]:
    """Run BLAS single-threaded inside the block (threadpoolctl). L-BFGS-B makes thousands of
    tiny BLAS calls; on a busy 2-core machine BLAS threads spin against each other and a
    5-parameter fit runs 10-30x slower (measured: 47.7 s vs 1.9 s)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def predict_log_loss(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """ln L(N, D) for theta = (ln A, ln B, ln E, alpha, beta), by logsumexp (never overflows)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    return special.logsumexp(terms, axis=0)


def huber_objective(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    delta: float = HUBER_DELTA,
) -> tuple[float, np.ndarray]:
    """Sum over points of Huber_delta(ln L_hat - ln L) and its gradient in theta."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    lse = special.logsumexp(terms, axis=0)
    w = np.exp(terms - lse)  # d lse / d term
    r = lse - log_l
    value = float(np.sum(special.huber(delta, r)))
    psi = np.clip(r, -delta, delta)  # d huber / d r
    grad = np.array(
        [
            np.sum(psi * w[0]),
            np.sum(psi * w[1]),
            np.sum(psi * w[2]),
            np.sum(psi * w[0] * -log_n),
            np.sum(psi * w[1] * -log_d),
        ]
    )
    return value, grad


def init_grid() -> np.ndarray:
    """Chinchilla's grid of initialisations: alpha, beta in {0, 0.5, ..., 2}, ln E in
    {-1, -0.5, ..., 1}, ln A and ln B in {0, 5, ..., 25} (4500 points)."""
    ab = np.arange(0.0, 2.01, 0.5)
    e = np.arange(-1.0, 1.01, 0.5)
    ln = np.arange(0.0, 25.01, 5.0)
    combos = itertools.product(ab, ab, e, ln, ln)
    return np.array([(a, b, ee, al, be) for al, be, ee, a, b in combos])


def _grid_objectives(
    grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float
) -> np.ndarray:
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    e_term = np.broadcast_to(e, (len(grid), len(log_n)))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, e_term])
    r = special.logsumexp(terms, axis=0) - log_l
    return np.sum(special.huber(delta, r), axis=1)


THETA_BOUNDS = ((-50.0, 150.0), (-50.0, 150.0), (-20.0, 20.0), (0.0, 5.0), (0.0, 5.0))
"""The box of theta = (ln A, ln B, ln E, alpha, beta) the fit searches."""


def fit_theta(
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    starts: np.ndarray,
    delta: float = HUBER_DELTA,
) -> tuple[np.ndarray, float]:
    """L-BFGS from each start; the best end point and its objective.

    The search is boxed (`THETA_BOUNDS`): on few or noisy points (a small sweep, a bootstrap
    resample that repeats runs) the Huber objective can have a flat valley along which alpha and
    ln A grow together without end; the box keeps such a fit finite, far outside every value a
    real fit takes (Chinchilla: alpha 0.34, beta 0.28, ln A 6.0, ln B 6.0, ln E 0.5)."""
    best_x, best_f = starts[0], math.inf
    for x0 in starts:
        res = optimize.minimize(
            huber_objective,
            x0,
            args=(log_n, log_d, log_l, delta),
            jac=True,
            method="L-BFGS-B",
            bounds=THETA_BOUNDS,
            options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12},
        )
        if res.fun < best_f:
            best_x, best_f = res.x, float(res.fun)
    return best_x, best_f


@dataclass
class Approach3:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    k: float
    """Training FLOPs per parameter-token used for the frontier (C = k N D)."""
    objective: float
    samples: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    """Bootstrap refits, rows (E, A, B, alpha, beta)."""

    @property
    def a(self) -> float:
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        return self.alpha / (self.alpha + self.beta)

    def loss(self, n: Any, d: Any) -> Any:
        return self.E + self.A / np.asarray(n) ** self.alpha + self.B / np.asarray(d) ** self.beta

    def optimum(self, budget: Any) -> tuple[Any, Any]:
        """Compute-optimal (N, D) at FLOP budget(s) C, with C = k N D."""
        return optimum(np.array([self.E, self.A, self.B, self.alpha, self.beta]), budget, self.k)

    def tokens_per_param(self, budget: float) -> float:
        n, d = self.optimum(budget)
        return float(d / n)

    def interval(self, fn: Any, level: float = 0.95) -> tuple[float, float] | None:
        """Percentile bootstrap interval of fn(params row) (None without bootstrap samples)."""
        if len(self.samples) == 0:
            return None
        vals = np.array([fn(row) for row in self.samples])
        q = 100 * (1 - level) / 2
        return float(np.percentile(vals, q)), float(np.percentile(vals, 100 - q))

    def intervals(self, level: float = 0.95) -> dict[str, tuple[float, float] | None]:
        out: dict[str, tuple[float, float] | None] = {
            name: self.interval(lambda row, i=i: row[i], level)
            for i, name in enumerate(PARAM_NAMES)
        }
        out["a"] = self.interval(lambda row: row[4] / (row[3] + row[4]), level)
        out["b"] = self.interval(lambda row: row[3] / (row[3] + row[4]), level)
        return out

    def tokens_per_param_interval(
        self, budget: float, level: float = 0.95
    ) -> tuple[float, float] | None:
        def tpp(row: np.ndarray) -> float:
            n, d = optimum(row, budget, self.k)
            return float(d / n)

        return self.interval(tpp, level)


def optimum(row: np.ndarray, budget: Any, k: float) -> tuple[Any, Any]:
    """Chinchilla's closed form for row = (E, A, B, alpha, beta) at C = k N D."""
    _, big_a, big_b, alpha, beta = row
    g = (alpha * big_a / (beta * big_b)) ** (1 / (alpha + beta))
    c = np.asarray(budget, dtype=np.float64) / k
    return g * c ** (beta / (alpha + beta)), c ** (alpha / (alpha + beta)) / g


def approach3(
    pts: Points,
    n_bootstrap: int = 200,
    seed: int = 0,
    n_starts: int = 32,
    delta: float = HUBER_DELTA,
) -> Approach3:
    """Fit L(N, D) = E + A/N^alpha + B/D^beta (see the module docstring).

    L-BFGS runs from the `n_starts` grid initialisations with the lowest objective (the
    rest of Chinchilla's 4500-point grid is ranked but not descended from); each bootstrap
    refit (rows resampled with replacement) starts from the full fit and the 2 best grid points
    of its own sample.
    """
    if len(pts.run) < 5:
        raise ScalingError(
            f"approach 3 fits 5 parameters and needs 5 or more runs, got {len(pts.run)}"
        )
    with single_thread_blas():
        return _approach3(pts, n_bootstrap, seed, n_starts, delta)


def _approach3(pts: Points, n_bootstrap: int, seed: int, n_starts: int, delta: float) -> Approach3:
    log_n, log_d, log_l = np.log(pts.params), np.log(pts.tokens), np.log(pts.loss)
    grid = init_grid()
    order = np.argsort(_grid_objectives(grid, log_n, log_d, log_l, delta))
    theta, fval = fit_theta(log_n, log_d, log_l, grid[order[:n_starts]], delta)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_bootstrap):
        idx = rng.integers(0, len(log_n), len(log_n))
        ranked = np.argsort(_grid_objectives(grid, log_n[idx], log_d[idx], log_l[idx], delta))
        starts = np.vstack([theta[None], grid[ranked[:2]]])
        t, _ = fit_theta(log_n[idx], log_d[idx], log_l[idx], starts, delta)
        samples.append(_natural(t))
    e, big_a, big_b, alpha, beta = _natural(theta)
    return Approach3(
        e,
        big_a,
        big_b,
        alpha,
        beta,
        pts.k,
        fval,
        np.array(samples) if samples else np.zeros((0, 5)),
    )


def _natural(theta: np.ndarray) -> tuple[float, float, float, float, float]:
    a, b, e, alpha, beta = (float(v) for v in theta)
    return math.exp(e), math.exp(a), math.exp(b), alpha, beta


# --- inference-aware optimum (Sardana et al. 2023) ------------------------------------------------


@dataclass
class InferenceOptimum:
    target_loss: float
    n: float
    d_train: float
    cost: float
    """Training plus inference FLOPs of the inference-aware model."""
    chinchilla_cost: float
    """Training plus inference FLOPs of the compute-optimal model with the same loss."""


def inference_optimum(
    fit: Approach3, budget: float, inference_tokens: float, target_loss: float | None = None
) -> InferenceOptimum:
    """Minimise k N D_train + (k/3) N D_inference subject to L(N, D_train) = target loss
    (default: the loss of the compute-optimal model at `budget`)."""
    if inference_tokens < 0:
        raise ScalingError("--inference-tokens must be >= 0")
    n0, d0 = fit.optimum(budget)
    target = float(fit.loss(n0, d0)) if target_loss is None else target_loss
    if target <= fit.E:
        raise ScalingError(f"target loss {target:.4g} is at or below the irreducible E {fit.E:.4g}")
    k, k_inf = fit.k, fit.k / 3
    # The smallest N that can reach the target with infinite data; D_train blows up near it.
    n_min = (fit.A / (target - fit.E)) ** (1 / fit.alpha)

    def d_train(n: float) -> float:
        gap = target - fit.E - fit.A / n**fit.alpha
        return (fit.B / gap) ** (1 / fit.beta)

    def cost(log_n: float) -> float:
        n = math.exp(log_n)
        return k * n * d_train(n) + k_inf * n * inference_tokens

    lo, hi = math.log(n_min) + 1e-6, math.log(max(float(n0), n_min)) + 1e-6
    # Serving tokens only push N below the compute-optimal size: search [n_min, N_opt].
    res = optimize.minimize_scalar(
        cost, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10}
    )
    n = math.exp(res.x)
    best = min((res.fun, n), (cost(math.log(float(n0))), float(n0)))
    n = best[1]
    return InferenceOptimum(
        target,
        n,
        d_train(n),
        best[0],
        k * float(n0) * float(d0) + k_inf * float(n0) * inference_tokens,
    )


# --- all approaches together ---------------------------------------------------------------------


@dataclass
class Fits:
    approach1: Approach1 | None
    approach2: Approach2 | None
    approach3: Approach3 | None
    errors: dict[str, str]


def fit_all(pts: Points, n_bootstrap: int = 200, seed: int = 0, n_starts: int = 32) -> Fits:
    """Every approach that the data allows; the others record why not."""
    errors: dict[str, str] = {}
    out: list[Any] = []
    for name, fn in (
        ("approach1", approach1),
        ("approach2", approach2),
        ("approach3", lambda p: approach3(p, n_bootstrap, seed, n_starts)),
    ):
        try:
            out.append(fn(pts))
        except ScalingError as e:
            out.append(None)
            errors[name] = str(e)
    if len(errors) == 3:
        raise ScalingError(f"no approach could fit the data: {errors['approach3']}")
    return Fits(*out, errors)


def _ci(v: tuple[float, float] | None) -> list[float] | None:
    return None if v is None else [v[0], v[1]]


def summary(pts: Points, fits: Fits, source: str, count: str) -> dict[str, Any]:
    """The JSON contract of `lmlab scaling fit`: approach1/2 (a, b), approach3 (E, A, B, alpha,
    beta, a, b and 95% bootstrap intervals) and tokens per parameter at each budget."""
    budgets = sorted({float(b) for b in pts.budget})
    out: dict[str, Any] = {
        "source": source,
        "count": count,
        "n_points": len(pts.run),
        "budgets": budgets,
        "flops_per_param_token": pts.k,
    }
    if fits.approach1:
        f1 = fits.approach1
        out["approach1"] = {
            "a": f1.a,
            "b": f1.b,
            "n_opt_coef": f1.n_opt.coef,
            "d_opt_coef": f1.d_opt.coef,
            "envelope_points": len(f1.envelope),
        }
    if fits.approach2:
        f2 = fits.approach2
        out["approach2"] = {
            "a": f2.a,
            "b": f2.b,
            "n_opt_coef": f2.n_opt.coef,
            "d_opt_coef": f2.d_opt.coef,
            "minima": [
                {
                    "budget": p.budget,
                    "n_opt": p.n_opt,
                    "d_opt": p.d_opt,
                    "loss": p.loss_opt,
                    "interior": p.interior,
                }
                for p in f2.profiles
            ],
        }
    if fits.approach3:
        f3 = fits.approach3
        ci = f3.intervals()
        out["approach3"] = {
            "E": f3.E,
            "A": f3.A,
            "B": f3.B,
            "alpha": f3.alpha,
            "beta": f3.beta,
            "a": f3.a,
            "b": f3.b,
            "k": f3.k,
            "objective": f3.objective,
            "n_bootstrap": len(f3.samples),
            "intervals": {k: _ci(v) for k, v in ci.items()},
            "tokens_per_param": [
                {
                    "budget": c,
                    "value": f3.tokens_per_param(c),
                    "interval": _ci(f3.tokens_per_param_interval(c)),
                }
                for c in budgets
            ],
        }
    for name, err in fits.errors.items():
        out[name] = {"error": err}
    return out
