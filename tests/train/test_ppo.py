"""Tests for lmlab.train.ppo and lmlab.train.rl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmlab.config import PPOConfig, TrainConfig
from lmlab.model.load import load_run
from lmlab.train.ppo import (
    AdaptiveKL,
    gae,
    per_token_rewards,
    policy_loss,
    train_ppo,
    value_loss,
)
from lmlab.train.reward import train_reward_model
from lmlab.train.rl import kl_estimate, masked_whiten, token_logprobs


def test_gae_hand_computed() -> None:
    rewards = torch.tensor([[0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[9.0, 0.5, 0.6, 0.7]])
    mask = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # position 0 is prompt: ignored
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # delta3 = 1 - 0.7; delta2 = 0.7 - 0.6; delta1 = 0.6 - 0.5
    a3 = 0.3
    a2 = 0.1 + 0.95 * a3
    a1 = 0.1 + 0.95 * a2
    torch.testing.assert_close(adv, torch.tensor([[0.0, a1, a2, a3]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, a1 + 0.5, a2 + 0.6, a3 + 0.7]]))


def test_first_minibatch_ratio_is_one_and_clip_is_inactive() -> None:
    torch.manual_seed(0)
    logp = torch.randn(4, 7)
    adv = torch.randn(4, 7)
    mask = (torch.rand(4, 7) > 0.3).float()
    out = policy_loss(logp, logp.clone(), adv, mask, clip=0.2)
    unclipped = -(adv * mask).sum() / mask.sum()
    assert torch.equal(torch.exp(logp - logp.clone()), torch.ones_like(logp))
    torch.testing.assert_close(out.loss, unclipped)
    assert out.clipfrac.item() == 0.0 and out.approx_kl.item() == 0.0


def test_policy_loss_clips_large_ratios() -> None:
    logp, old = torch.tensor([[1.0]]), torch.tensor([[0.0]])  # ratio e > 1.2
    out = policy_loss(logp, old, torch.tensor([[1.0]]), torch.ones(1, 1), clip=0.2)
    assert out.loss.item() == pytest.approx(-1.2)
    assert out.clipfrac.item() == 1.0


def test_value_loss_clipped() -> None:
    loss, frac = value_loss(
        torch.tensor([[2.0]]),
        torch.tensor([[0.0]]),
        torch.tensor([[0.0]]),
        torch.ones(1, 1),
        clip=0.2,
    )
    assert loss.item() == pytest.approx(0.5 * 4.0) and frac.item() == 0.0


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_kl_zero_for_identical_policies(kind: str) -> None:
    logp = torch.randn(3, 5)
    assert torch.count_nonzero(kl_estimate(logp, logp.clone(), kind)) == 0


def test_kl_k3_matches_true_kl_in_expectation() -> None:
    p = torch.tensor([0.7, 0.2, 0.1])
    q = torch.tensor([0.5, 0.3, 0.2])
    true_kl = (p * (p / q).log()).sum()
    est = (p * kl_estimate(p.log(), q.log(), "k3")).sum()  # exact expectation over samples of p
    torch.testing.assert_close(est, true_kl)


def test_per_token_rewards_put_score_on_last_response_token() -> None:
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    kl = torch.ones(2, 4)
    r = per_token_rewards(torch.tensor([5.0, 7.0]), kl, mask, beta=0.1)
    torch.testing.assert_close(r, torch.tensor([[0.0, -0.1, 4.9, 0.0], [0.0, 0.0, -0.1, 6.9]]))


def test_token_logprobs_and_temperature() -> None:
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    lp = token_logprobs(logits, ids, temperature=0.5)
    ref = torch.log_softmax(logits[0, 2] / 0.5, -1)[ids[0, 3]]
    torch.testing.assert_close(lp[0, 2], ref)


def test_whiten_and_adaptive_kl() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)
    assert w[0, :3].mean().abs() < 1e-6
    ctl = AdaptiveKL(beta=0.1, target=1.0, horizon=100)
    assert ctl.update(kl=5.0, n_samples=10) == pytest.approx(0.1 * 1.02)
    assert AdaptiveKL(beta=0.1, target=None).update(5.0, 10) == 0.1
    with pytest.raises(ValueError, match="kl_horizon"):
        PPOConfig(kl_horizon=0).validate()


def test_ppo_driver_smoke(chat_run: Path, prefs_file: Path, tmp_path: Path) -> None:
    rm_train = TrainConfig(
        max_steps=3, lr=1e-3, warmup_steps=1, batch_size=4, eval_every=3, eval_iters=1
    )
    train_reward_model(chat_run, prefs_file, tmp_path / "rm", rm_train, show_progress=False)
    cfg = PPOConfig(
        tasks="arith:1", prompts_per_iter=4, iterations=2, epochs=2, minibatch=2, max_new_tokens=6
    )
    last = train_ppo(
        chat_run,
        tmp_path / "rm",
        tmp_path / "ppo",
        TrainConfig(lr=1e-4, min_lr=1e-5),
        cfg,
        show_progress=False,
    )
    for key in (
        "score",
        "gold",
        "kl",
        "total_reward",
        "entropy",
        "clipfrac",
        "approx_kl",
        "vf_clipfrac",
        "response_len",
        "end_rate",
        "train_loss",
    ):
        assert key in last
    rows = (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2
    assert json.loads(rows[0])["kl"] == pytest.approx(0.0, abs=1e-5)  # policy == ref at first
    assert (tmp_path / "ppo" / "ppo_curves.png").read_bytes()[:4] == b"\x89PNG"
    load_run(tmp_path / "ppo")


def test_ppo_rejects_reward_model_with_other_tokenizer(
    chat_run: Path, tiny_run: Path, prefs_file: Path, tmp_path: Path
) -> None:
    rm_train = TrainConfig(
        max_steps=1, lr=1e-3, warmup_steps=1, batch_size=4, eval_every=1, eval_iters=1
    )
    train_reward_model(tiny_run, prefs_file, tmp_path / "rm", rm_train, show_progress=False)
    with pytest.raises(ValueError, match="different tokenizer"):
        train_ppo(
            chat_run,
            tmp_path / "rm",
            tmp_path / "ppo",
            TrainConfig(),
            PPOConfig(),
            show_progress=False,
        )
