"""Tests for lmlab.eval.overopt: the Gao et al. functional forms are recovered exactly."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from lmlab.config import PPOConfig, TrainConfig
from lmlab.eval.overopt import bon_kl, fit_form, predict_form, run_overopt


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_fit_recovers_known_parameters(form: str) -> None:
    d = np.linspace(0.1, 3.0, 25)
    r = predict_form(d, 1.3, 0.4, form)
    alpha, beta = fit_form(d, r, form)
    assert alpha == pytest.approx(1.3) and beta == pytest.approx(0.4)


def test_bon_kl() -> None:
    assert bon_kl(1) == 0.0
    assert bon_kl(4) == pytest.approx(math.log(4) - 0.75)


@pytest.mark.slow
def test_run_overopt_end_to_end(
    chat_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A random model's replies all tie under the real gold judge (wrong, same length); a
    # deterministic stand-in judge exercises the plumbing. gold_score has its own tests.
    def fake_gold(problem: object, response: str) -> float:
        return (sum(map(ord, response)) % 97) / 97

    monkeypatch.setattr("lmlab.data.prefs.gold_score", fake_gold)
    monkeypatch.setattr("lmlab.train.ppo.gold_score", fake_gold)
    ppo = PPOConfig(
        tasks="arith:1",
        prompts_per_iter=4,
        iterations=3,
        epochs=1,
        minibatch=4,
        max_new_tokens=8,
        kl_beta=0.0,
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
        ppo_train=TrainConfig(lr=1e-3, min_lr=1e-3),
        bon_prompts=4,
        bon_max=4,
        show_progress=False,
    )
    assert [r["n"] for r in summary["best_of_n"]] == [1, 2, 4]
    assert {"alpha", "beta"} <= summary["rl_fit"].keys()
    assert (tmp_path / "oo" / "overopt.png").stat().st_size > 1000
