"""Tests for lmlab.scaling.fit: the three Chinchilla approaches on synthetic data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize, special

from lmlab.scaling import fit as F

TRUE = dict(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366)


def chinchilla_loss(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return TRUE["E"] + TRUE["A"] / n ** TRUE["alpha"] + TRUE["B"] / d ** TRUE["beta"]


def true_a() -> float:
    return TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])


def grid_points(n: int = 20, noise: float = 0.005, seed: int = 0) -> F.Points:
    """N in 1e7..1e10 x D in 1e9..1e12, losses with multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    big_n, big_d = (x.ravel() for x in np.meshgrid(np.logspace(7, 10, n), np.logspace(9, 12, n)))
    loss = chinchilla_loss(big_n, big_d) * np.exp(rng.normal(0, noise, big_n.size))
    c = 6 * big_n * big_d
    return F.Points(big_n, big_d, loss, c, c, [f"r{i}" for i in range(big_n.size)])


def isoflop_points(
    budgets: list[float], per_budget: int = 9, noise: float = 0.0, seed: int = 0
) -> F.Points:
    """Per budget, sizes log-spaced 4x either side of the true optimum (C = 6 N D)."""
    rng = np.random.default_rng(seed)
    row = np.array([TRUE[k] for k in F.PARAM_NAMES])
    ns, ds, cs = [], [], []
    for c in budgets:
        n0, _ = F.optimum(row, c, 6.0)
        for n in n0 * np.logspace(-0.6, 0.6, per_budget):
            ns.append(n)
            ds.append(c / (6 * n))
            cs.append(c)
    n, d, c = np.array(ns), np.array(ds), np.array(cs)
    loss = chinchilla_loss(n, d) * np.exp(rng.normal(0, noise, n.size))
    return F.Points(n, d, loss, c, c, [f"r{i}" for i in range(n.size)])


# --- Approach 3 ----------------------------------------------------------------------------------


def test_approach3_recovers_chinchilla_parameters() -> None:
    fit = F.approach3(grid_points(), n_bootstrap=8, n_starts=8)
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=0.02)
    assert fit.beta == pytest.approx(TRUE["beta"], rel=0.02)
    assert fit.a == pytest.approx(true_a(), rel=0.02)
    assert fit.b == pytest.approx(1 - true_a(), rel=0.02)
    e, big_a, big_b = fit.E, fit.A, fit.B
    assert e == pytest.approx(TRUE["E"], rel=0.02)
    assert big_a == pytest.approx(TRUE["A"], rel=0.25)
    assert big_b == pytest.approx(TRUE["B"], rel=0.25)
    assert fit.k == pytest.approx(6.0)
    ci = fit.intervals()
    for name in ("E", "alpha", "beta", "a", "b"):
        lo, hi = ci[name]
        assert lo <= getattr(fit, name) <= hi, name
    lo, hi = fit.tokens_per_param_interval(1e21)
    assert lo <= fit.tokens_per_param(1e21) <= hi


def test_huber_objective_is_summed_not_averaged() -> None:
    pts = grid_points(n=6)
    ln, ld, ll = np.log(pts.params), np.log(pts.tokens), np.log(pts.loss)
    theta = np.array([math.log(400), math.log(2000), math.log(1.8), 0.3, 0.4])
    value, grad = F.huber_objective(theta, ln, ld, ll)
    resid = F.predict_log_loss(theta, ln, ld) - ll
    assert value == pytest.approx(float(np.sum(special.huber(1e-3, resid))), rel=1e-12)
    assert value != pytest.approx(float(np.mean(special.huber(1e-3, resid))))
    # Duplicating every point doubles the objective and its gradient (a mean would not move).
    v2, g2 = F.huber_objective(theta, np.tile(ln, 2), np.tile(ld, 2), np.tile(ll, 2))
    assert v2 == pytest.approx(2 * value, rel=1e-12)
    np.testing.assert_allclose(g2, 2 * grad, rtol=1e-12)
    # The analytic gradient matches finite differences.
    num = optimize.approx_fprime(theta, lambda t: F.huber_objective(t, ln, ld, ll)[0], 1e-7)
    np.testing.assert_allclose(grad, num, rtol=1e-4, atol=1e-9)


def test_huber_delta_is_1e_3_and_fit_is_robust_to_an_outlier() -> None:
    assert F.HUBER_DELTA == 1e-3
    pts = grid_points(n=12, noise=0.0)
    loss = pts.loss.copy()
    loss[5] *= 3.0  # one diverged run
    bad = F.Points(pts.params, pts.tokens, loss, pts.flops, pts.budget, pts.run)
    fit = F.approach3(bad, n_bootstrap=0, n_starts=8)
    assert fit.alpha == pytest.approx(TRUE["alpha"], rel=0.02)
    assert fit.beta == pytest.approx(TRUE["beta"], rel=0.02)


def test_grid_of_initialisations_is_chinchillas() -> None:
    grid = F.init_grid()
    assert grid.shape == (4500, 5)
    assert set(np.round(grid[:, 3], 2)) == {0.0, 0.5, 1.0, 1.5, 2.0}
    assert set(grid[:, 0]) == {0.0, 5.0, 10.0, 15.0, 20.0, 25.0}


def test_compute_optimal_frontier_closed_form() -> None:
    row = np.array([TRUE[k] for k in F.PARAM_NAMES])
    c = 1e22
    n, d = F.optimum(row, c, 6.0)
    assert 6 * n * d == pytest.approx(c, rel=1e-9)
    # No other split of the same budget has a lower loss.
    for f in (0.8, 1.25):
        assert chinchilla_loss(n * f, d / f) > chinchilla_loss(n, d)
    n2, d2 = F.optimum(row, 4 * c, 6.0)
    assert math.log(n2 / n) / math.log(4) == pytest.approx(true_a(), rel=1e-9)
    assert math.log(d2 / d) / math.log(4) == pytest.approx(1 - true_a(), rel=1e-9)


def test_inference_aware_optimum_trains_smaller_longer() -> None:
    fit = F.Approach3(**TRUE, k=6.0, objective=0.0)
    c = 1e22
    n0, d0 = fit.optimum(c)
    none = F.inference_optimum(fit, c, 0.0)
    assert none.n == pytest.approx(n0, rel=1e-3)
    assert none.cost == pytest.approx(c, rel=1e-6)
    heavy = F.inference_optimum(fit, c, 100 * d0)
    assert heavy.n < 0.9 * n0 and heavy.d_train > d0
    assert float(fit.loss(heavy.n, heavy.d_train)) == pytest.approx(heavy.target_loss, rel=1e-9)
    assert heavy.cost < heavy.chinchilla_cost
    # A brute-force scan over N finds no cheaper model that reaches the same loss.
    for n in np.exp(np.linspace(math.log(heavy.n) - 0.5, math.log(n0), 200)):
        gap = heavy.target_loss - fit.E - fit.A / n**fit.alpha
        if gap > 0:
            d = (fit.B / gap) ** (1 / fit.beta)
            assert 6 * n * d + 2 * n * 100 * d0 >= heavy.cost * (1 - 1e-6)


# --- Approach 2 ----------------------------------------------------------------------------------


def test_approach2_recovers_exponent_from_isoflop_data() -> None:
    pts = isoflop_points([1e18, 1e19, 1e20, 1e21, 1e22], noise=0.001)
    fit = F.approach2(pts)
    assert fit.a == pytest.approx(true_a(), rel=0.02)
    assert fit.b == pytest.approx(1 - true_a(), rel=0.02)
    assert all(p.interior for p in fit.profiles)


def test_approach2_exact_parabolas() -> None:
    """Losses that are exact parabolas in ln N with minima at N = 3 C^0.42 give a = 0.42."""
    ns, ds, ls, cs = [], [], [], []
    for c in (1e15, 1e16, 1e17):
        n_opt = 3 * c**0.42
        for n in n_opt * np.logspace(-0.5, 0.5, 5):
            ns.append(n)
            ds.append(c / (6 * n))
            ls.append(2.0 + 0.1 * math.log(n / n_opt) ** 2)
            cs.append(c)
    c = np.array(cs)
    fit = F.approach2(
        F.Points(np.array(ns), np.array(ds), np.array(ls), c, c, [str(i) for i in range(len(ns))])
    )
    assert fit.a == pytest.approx(0.42, rel=1e-6)
    assert fit.b == pytest.approx(0.58, rel=1e-6)
    assert fit.n_opt.coef == pytest.approx(3.0, rel=1e-5)


def test_approach2_needs_three_sizes_and_convexity() -> None:
    pts = isoflop_points([1e18, 1e19], per_budget=2)
    with pytest.raises(F.ScalingError, match="needs 3 or more"):
        F.approach2(pts)


# --- Approach 1 ----------------------------------------------------------------------------------


def test_lower_envelope_picks_best_run_at_each_flop_count() -> None:
    # Two runs with 6 FLOPs per param-token: the small one is better early, the big one late.
    small = np.array([[1e3, 3.0], [1e4, 2.0], [1e5, 1.5]])
    big = np.array([[1e1, 5.0], [1e2, 4.0], [1e3, 2.5], [1e4, 1.2]])
    pts = F.Points(
        np.array([10.0, 100.0]),
        np.array([1e5, 1e4]),
        np.array([1.5, 1.2]),
        np.array([6e6, 6e6]),
        np.array([6e6, 6e6]),
        ["small", "big"],
        {"small": small, "big": big},
    )
    env = F.lower_envelope(pts, n_grid=80)
    c, loss, n = env[:, 0], env[:, 1], env[:, 2]
    assert c.min() == pytest.approx(6e3) and c.max() == pytest.approx(6e6)
    # Below 6e4 FLOPs only 'big' has data; then 'small' is lower until the curves cross
    # (2 - 0.5 t = 2.5 - 1.3 t at t = 0.625 decades above 6e5); then 'big' again.
    cross = 6e5 * 10**0.625
    assert np.all(n[c < 6e4 * 0.999] == 100.0)
    assert np.all(n[(c > 6e4 * 1.001) & (c < cross * 0.99)] == 10.0)
    assert np.all(n[c > cross * 1.01] == 100.0)
    assert {10.0, 100.0} == set(n)
    # The envelope is the pointwise minimum of both curves.
    for ci, li in zip(c, loss, strict=True):
        vals = [
            np.interp(np.log(ci), np.log(cv[:, 0] * 6 * nn), cv[:, 1])
            for cv, nn in ((small, 10.0), (big, 100.0))
            if cv[0, 0] * 6 * nn <= ci * (1 + 1e-9) and ci <= cv[-1, 0] * 6 * nn * (1 + 1e-9)
        ]
        assert li == pytest.approx(min(vals))


def test_approach1_recovers_exponent_from_training_curves() -> None:
    """Dense ladder of sizes, curves sampled from L(N, D) along each run (no schedule effect)."""
    sizes = np.logspace(7, 10, 40)
    curves, d_final = {}, []
    for i, n in enumerate(sizes):
        d = np.logspace(8.5, 12.5, 60)
        curves[f"r{i}"] = np.stack([d, chinchilla_loss(n, d)], axis=1)
        d_final.append(d[-1])
    d_final = np.array(d_final)
    flops = 6 * sizes * d_final
    pts = F.Points(
        sizes, d_final, chinchilla_loss(sizes, d_final), flops, flops, list(curves), curves
    )
    fit = F.approach1(pts, n_grid=60)
    assert fit.a == pytest.approx(true_a(), rel=0.05)
    assert fit.b == pytest.approx(1 - true_a(), rel=0.05)


def test_pareto_front_without_curves() -> None:
    pts = F.Points(
        np.array([1.0, 2.0, 3.0, 4.0]),
        np.array([1.0, 1.0, 1.0, 1.0]),
        np.array([3.0, 3.5, 2.0, 1.0]),
        np.array([1.0, 2.0, 3.0, 4.0]),
        np.array([1.0, 2.0, 3.0, 4.0]),
        ["a", "b", "c", "d"],
    )
    env = F.lower_envelope(pts)
    assert list(env[:, 2]) == [1.0, 3.0, 4.0]


# --- tables --------------------------------------------------------------------------------------


def test_read_points_csv(tmp_path: Path) -> None:
    path = tmp_path / "points.csv"
    path.write_text("params,tokens,loss\n1e6,2e7,3.1\n2e6,1e7,3.0\n")
    pts = F.read_points_csv(path)
    np.testing.assert_allclose(pts.flops, [1.2e14, 1.2e14])
    assert len(np.unique(pts.budget)) == 1
    assert pts.k == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("params,loss\n1,2\n", "lacks column.*tokens"),
        ("params,tokens,loss\n1e6,2e7,-3\n", "row 2: loss must be a positive number"),
        ("params,tokens,loss\n0,2e7,3\n", "row 2: params must be a positive number"),
        ("params,tokens,loss\n1e6,abc,3\n", "row 2: tokens 'abc' is not a number"),
        ("params,tokens,loss\n", "has no rows"),
    ],
)
def test_bad_tables_give_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "points.csv"
    path.write_text(text)
    with pytest.raises(F.ScalingError, match=match):
        F.read_points_csv(path)


def test_group_budgets() -> None:
    labels = F.group_budgets(np.array([1e12, 1.03e12, 3e12, 2.95e12, 1e13]))
    assert len(np.unique(labels)) == 3
    assert labels[0] == labels[1] and labels[2] == labels[3]
