"""Tests for lmlab.train.ppo and lmlab.train.rl."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lmlab.config import PPOConfig, TrainConfig
from lmlab.infer import Engine, SamplingParams
from lmlab.model.load import load_run
from lmlab.model.scoring import token_logprobs
from lmlab.runs import write_run_files
from lmlab.train.checkpoint import save_checkpoint
from lmlab.train.ppo import (
    AdaptiveKL,
    gae,
    penalise_unended,
    per_token_rewards,
    policy_loss,
    rollout_logprobs,
    train_ppo,
    value_loss,
)
from lmlab.train.reward import train_reward_model
from lmlab.train.rl import kl_estimate, masked_whiten


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


def test_unended_responses_get_the_penalty_instead_of_their_score() -> None:
    score = torch.tensor([0.8, -0.3, 2.0, 0.1])
    ended = torch.tensor([True, False, True, False])
    # replaced (Huang et al. 2024), not added: an added penalty would give -1.3 and -0.9
    torch.testing.assert_close(
        penalise_unended(score, ended, -1.0), torch.tensor([0.8, -1.0, 2.0, -1.0])
    )


class FixedLogits(nn.Module):
    """A 'model' whose logits are given: the log-probs and KL below are known in closed form."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, ids: Tensor) -> Tensor:
        return self.logits


def test_rollout_kl_scores_policy_and_reference_at_the_same_temperature() -> None:
    torch.manual_seed(0)
    pol, ref = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    t = 0.5
    out = rollout_logprobs(FixedLogits(pol), FixedLogits(ref), ids, t)
    nxt = ids[:, 1:, None]
    lp, lr = torch.log_softmax(pol[:, :-1] / t, -1), torch.log_softmax(ref[:, :-1] / t, -1)
    torch.testing.assert_close(out.logp, lp.gather(2, nxt).squeeze(-1))
    torch.testing.assert_close(out.ref_logp, lr.gather(2, nxt).squeeze(-1))
    # the reference at T = 1 would be a different distribution: the temperature matters here
    at_one = torch.log_softmax(ref[:, :-1], -1).gather(2, nxt).squeeze(-1)
    assert (out.ref_logp - at_one).abs().max() > 0.1
    # the exact next-token KL(pi_T || ref_T), written out term by term at one position
    p, q = lp[1, 2].exp(), lr[1, 2].exp()
    kl = sum(float(p[v] * math.log(p[v] / q[v])) for v in range(7))
    assert out.kl[1, 2].item() == pytest.approx(kl, rel=1e-5)
    assert out.kl.min() >= 0
    same = rollout_logprobs(FixedLogits(pol), FixedLogits(pol.clone()), ids, t)
    assert same.kl.abs().max() < 1e-6


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
    ).summary
    for key in (
        "score",
        "penalised_score",
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
    # `tokens` counts the response tokens trained on so far, once per epoch (2 here)
    counts = [json.loads(r) for r in rows]
    assert counts[-1]["tokens"] == 2 * sum(r["response_tokens"] for r in counts)
    assert counts[0]["tokens"] == 2 * counts[0]["response_tokens"] > 0
    assert (tmp_path / "ppo" / "ppo_curves.png").read_bytes()[:4] == b"\x89PNG"
    load_run(tmp_path / "ppo")


def never_ending_run(chat_run: Path, out: Path) -> Path:
    """A copy of `chat_run` that never writes <|end|>. The embeddings are tied, so a residual
    coordinate set to +5 in every token's embedding (-5 in <|end|>'s) dominates the final norm
    and gives <|end|> a logit about 56 below every other token's."""
    model, tok, cfg = load_run(chat_run)
    with torch.no_grad():
        model.embed.weight[:, 0] = 5.0
        model.embed.weight[tok.end_id, 0] = -5.0
    write_run_files(out, cfg, tok)
    save_checkpoint(out, model, None, {"step": 0, "tokens": 0})
    return out


def test_logged_proxy_is_the_raw_score_when_no_rollout_ends(
    chat_run: Path, prefs_file: Path, tmp_path: Path
) -> None:
    policy_run = never_ending_run(chat_run, tmp_path / "policy")
    probe = Engine.from_checkpoint(policy_run).generate(
        [[5, 6, 7]] * 8, SamplingParams(max_new_tokens=20, temperature=1.0, seed=0)
    )
    assert all(c[0].finish_reason == "length" for c in probe)  # the construction holds
    rm_train = TrainConfig(
        max_steps=1, lr=1e-3, warmup_steps=1, batch_size=4, eval_every=1, eval_iters=1
    )
    train_reward_model(chat_run, prefs_file, tmp_path / "rm", rm_train, show_progress=False)
    c = 0.375
    cfg = PPOConfig(
        tasks="arith:1", prompts_per_iter=4, iterations=2, epochs=1, minibatch=4, max_new_tokens=5
    )
    train_ppo(
        policy_run,
        tmp_path / "rm",
        tmp_path / "ppo",
        TrainConfig(lr=1e-4, min_lr=1e-5),
        cfg,
        show_progress=False,
        score=lambda ids, last: torch.full((len(ids),), c),
        gold=lambda problem, response: 0.0,
    )
    rows = [json.loads(x) for x in (tmp_path / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["end_rate"] for r in rows] == [0.0, 0.0]
    assert [r["score"] for r in rows] == [c, c]  # the proxy: the reward model's own score
    assert [r["penalised_score"] for r in rows] == [cfg.no_eos_penalty] * 2  # what PPO trains on
    samples = [json.loads(x) for x in (tmp_path / "ppo" / "samples.jsonl").read_text().splitlines()]
    assert all(s["score"] == c and not s["ended"] for s in samples)


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
