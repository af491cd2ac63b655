"""Tests for lmlab.experiments.overopt: the Gao et al. functional forms are recovered exactly,
and the direct fit of R(d) beats the old fit of R/d on noisy data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lmlab.config import PPOConfig, TrainConfig
from lmlab.experiments.overopt import bon_kl, fit_form, predict_form, run_overopt


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_known_parameters(form: str) -> None:
    d = np.linspace(0.1, 3.0, 25)
    r = predict_form(d, 1.3, 0.4, form)
    alpha, beta = fit_form(d, r, form)
    assert alpha == pytest.approx(1.3) and beta == pytest.approx(0.4)


def fit_over_d(d: np.ndarray, r: np.ndarray, form: str) -> tuple[float, float]:
    """The fit this module used before: a straight line through R/d = alpha - beta f(d)."""
    f = d if form == "bon" else np.log(d)
    slope, intercept = np.polyfit(f, r / d, 1)
    return float(intercept), float(-slope)


@pytest.mark.parametrize(
    ("form", "d"),
    [
        ("bon", np.sqrt([bon_kl(2**k) for k in range(1, 7)])),  # n = 2 .. 64: d 0.44 .. 1.83
        ("rl", np.linspace(0.05, 2.5, 40)),  # a PPO run's KL from near 0 up
    ],
)
def test_direct_fit_has_smaller_spread_than_the_fit_of_r_over_d(form: str, d: np.ndarray) -> None:
    alpha, beta, noise, draws = 0.14, 0.09, 0.02, 2000
    rng = np.random.default_rng(0)
    clean = predict_form(d, alpha, beta, form)
    direct, over_d = [], []
    for _ in range(draws):
        r = clean + rng.normal(0.0, noise, len(d))  # the same noise on every measured R
        direct.append(fit_form(d, r, form))
        over_d.append(fit_over_d(d, r, form))
    direct_a, over_d_a = np.array(direct), np.array(over_d)
    # both are unbiased; the direct fit is centred on the truth within its standard error ...
    se = direct_a.std(0) / math.sqrt(draws)
    assert np.all(np.abs(direct_a.mean(0) - [alpha, beta]) < 4 * se)
    # ... and recovers both parameters with a smaller spread (Gauss-Markov: least squares on R
    # is the best linear unbiased fit; dividing by d inflates the noise where d is small)
    assert np.all(direct_a.std(0) < 0.9 * over_d_a.std(0))


def test_bon_kl() -> None:
    assert bon_kl(1) == 0.0
    assert bon_kl(4) == pytest.approx(math.log(4) - 0.75)


@pytest.mark.slow
def test_run_overopt_end_to_end(chat_run: Path, tmp_path: Path) -> None:
    # A random model's replies all tie under the real gold judge (wrong, same length); a
    # deterministic stand-in judge, given as `gold`, exercises the plumbing: it labels the
    # proxy's preference pairs and scores both arms. The world's gold judge has its own tests.
    def fake_gold(problem: object, response: str) -> float:
        return (sum(map(ord, response)) % 97) / 97

    ppo = PPOConfig(
        tasks="arith:1",
        prompts_per_iter=4,
        iterations=3,
        epochs=1,
        minibatch=4,
        max_new_tokens=8,
        kl_beta=0.0,
        temperature=0.8,
    )
    rm = TrainConfig(
        max_steps=3, lr=1e-3, min_lr=1e-4, warmup_steps=1, batch_size=4, eval_every=3, eval_iters=1
    )
    summary = run_overopt(
        chat_run,
        tmp_path / "oo",
        ["arith:1"],
        n_pref_prompts=12,
        noise=0.2,
        rm_train=rm,
        ppo=ppo,
        ppo_train=TrainConfig(lr=1e-2, min_lr=1e-2),  # steps big enough for a KL well above 0
        bon_prompts=4,
        bon_max=4,
        show_progress=False,
        gold=fake_gold,
    )
    assert [r["n"] for r in summary["best_of_n"]] == [1, 2, 4]
    assert summary["temperature"] == 0.8
    assert {"alpha", "beta"} <= summary["rl_fit"].keys()
    assert (tmp_path / "oo" / "overopt.png").stat().st_size > 1000
