"""PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022; the "N implementation
details of RLHF with PPO", Huang et al. 2024): the objective's pieces.

Per-token reward = -beta * KL(pi || ref) at every response token, plus a score at the last
token: the reward model's score where the response ended with <|end|>, and a fixed penalty in
its place where it ran out of tokens (Huang et al. 2024: `where(ended, score, penalty)`).
Policy and reference are both scored at the sampling temperature, so the KL is the one between
the two distributions actually sampled from. Advantages by GAE (gamma 1, lambda 0.95) against a
value model, whitened over the batch; the policy loss is PPO's clipped surrogate, the value loss
is clipped around the rollout's values.

The reward model's raw score is logged as `score` (the proxy that reward over-optimisation
plots); the score after the penalty, which training uses, as `penalised_score`. The logged `kl`
(which also drives the adaptive coefficient) is the exact next-token KL summed along each
response, an estimate of the sequence KL that is never negative; the per-token penalty itself
is the sampled log-ratio.
"""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from lmlab.config import PPOConfig, TrainConfig
from lmlab.data import world
from lmlab.data.prefs import chat_prompt_ids, gold_score, world_prompts
from lmlab.infer import Engine, SamplingParams
from lmlab.model.heads import gather_at
from lmlab.model.moe import with_router_losses
from lmlab.train.checkpoint import load_run, write_run_files
from lmlab.train.loop import Trainer
from lmlab.train.pretrain import check_new_run_dir
from lmlab.train.reward import load_reward_model
from lmlab.train.rl import (
    entropy,
    masked_mean,
    masked_whiten,
    pad_rows,
    response_mask,
    token_logprobs,
)

console = Console(stderr=True)

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""Scores [B] of padded rows `ids` [B, T], each read at its last token `last` [B]."""
GoldFn = Callable[[Any, str], float]
"""The hidden gold reward of a response (text) to a world problem; logged, never trained on."""


def penalise_unended(score: Tensor, ended: Tensor, penalty: float) -> Tensor:
    """The score training uses: `score` where the response ended, `penalty` where it never did.

    Replaced, not added (Huang et al. 2024): a response cut off by the token budget has no
    closing <|end|>, so the reward model reads it at an arbitrary token it was never trained on
    and its score there means nothing."""
    return torch.where(ended, score, torch.full_like(score, penalty))


@dataclass
class RolloutLogprobs:
    logp: Tensor
    """[B, T-1] log-prob of each next token under the policy at the sampling temperature."""
    ref_logp: Tensor
    """[B, T-1] the same under the reference."""
    kl: Tensor
    """[B, T-1] KL(pi_T || ref_T) of each whole next-token distribution."""


@torch.no_grad()
def rollout_logprobs(
    policy: nn.Module, ref: nn.Module, ids: Tensor, temperature: float
) -> RolloutLogprobs:
    """Scores of the rows under the policy and the reference, both at the sampling
    `temperature`: pi_T is what the rollouts came from and ref_T what the policy started as, so
    KL(pi_T || ref_T) is the distance travelled.

    Summed over a sampled response, `kl` is an estimate of the sequence KL (chain rule: the
    sequence KL is the expected sum of the next-token KLs along a sample of pi_T) that, unlike
    the sampled log-ratio `logp - ref_logp`, is never negative."""
    lp = F.log_softmax(policy(ids)[:, :-1].float() / temperature, dim=-1)
    lr = F.log_softmax(ref(ids)[:, :-1].float() / temperature, dim=-1)
    nxt = ids[:, 1:, None]
    return RolloutLogprobs(
        lp.gather(2, nxt).squeeze(-1),
        lr.gather(2, nxt).squeeze(-1),
        (lp.exp() * (lp - lr)).sum(-1),
    )


def per_token_rewards(score: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """[B, T] rewards: -beta * kl on response tokens, plus `score` [B] at each row's last one."""
    rewards = -beta * kl * mask
    last = mask.long().cumsum(1).argmax(1)  # index of the last response token per row
    rewards[torch.arange(len(score)), last] += score
    return rewards


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over the masked positions.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lambda * A_{t+1}, with
    V = 0 after the last response token. Returns (advantages, returns = advantages + values).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    T = values.shape[1]
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, adv + values


@dataclass
class PolicyLossOut:
    loss: Tensor
    clipfrac: Tensor
    approx_kl: Tensor


def policy_loss(
    logp: Tensor, old_logp: Tensor, adv: Tensor, mask: Tensor, clip: float = 0.2
) -> PolicyLossOut:
    """PPO's clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps))."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - clip, 1 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(0.5 * (logp - old_logp) ** 2, mask)
    return PolicyLossOut(loss, clipfrac, approx_kl)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float = 0.2
) -> tuple[Tensor, Tensor]:
    """Clipped value loss 0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2) and its clipfrac."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    a, b = (values - returns) ** 2, (clipped - returns) ** 2
    return 0.5 * masked_mean(torch.maximum(a, b), mask), masked_mean((b > a).float(), mask)


def whiten_advantages(adv: Tensor, mask: Tensor) -> Tensor:
    return masked_whiten(adv, mask) * mask


@dataclass
class AdaptiveKL:
    """Adaptive KL coefficient (Ziegler et al. 2019): beta moves so the observed KL tracks
    `target`, by at most 20% per `horizon` samples; `target=None` keeps beta fixed."""

    beta: float = 0.05
    target: float | None = 6.0
    horizon: int = 10000

    def update(self, kl: float, n_samples: int) -> float:
        if self.target is not None:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.beta *= 1 + error * n_samples / self.horizon
        return self.beta


# --- the phase driver -------------------------------------------------------------------------


def _policy_objective(temperature: float, clip: float) -> Any:
    def objective(model: nn.Module, b: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits = model(b["ids"])
        logp = token_logprobs(logits, b["ids"], temperature)
        out = policy_loss(logp, b["old_logp"], b["adv"], b["mask"], clip)
        with torch.no_grad():
            ent = masked_mean(entropy(logits, temperature), b["mask"])
        return with_router_losses(model, out.loss), {
            "clipfrac": float(out.clipfrac),
            "approx_kl": float(out.approx_kl),
            "entropy": float(ent),
        }

    return objective


def _value_objective(clip: float) -> Any:
    def objective(model: nn.Module, b: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        values = model(b["ids"])[:, :-1]
        loss, frac = value_loss(values, b["old_values"], b["returns"], b["mask"], clip)
        return loss, {"vf_clipfrac": float(frac)}

    return objective


def train_ppo(
    sft_run: Path,
    reward_run: Path,
    out: Path,
    train: TrainConfig,
    cfg: PPOConfig,
    show_progress: bool = True,
    score: ScoreFn | None = None,
    gold: GoldFn = gold_score,
) -> dict[str, Any]:
    """PPO from `sft_run` against the reward model in `reward_run`; `out` holds the policy run
    (loadable like any run) and `out/value` the value model.

    `score` replaces the reward model's score of a rollout (the value model still starts from
    `reward_run`); `gold` is the hidden judge that is logged beside it."""
    cfg.validate()
    train.validate()
    check_new_run_dir(out)
    policy, tok, run_cfg = load_run(sft_run)
    reward_model, rm_tok = load_reward_model(reward_run)
    if rm_tok.hf.to_str() != tok.hf.to_str():
        raise ValueError(f"reward model {reward_run} uses a different tokenizer from {sft_run}")
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    value_model = copy.deepcopy(reward_model)  # value model initialised from the reward model
    reward_model.requires_grad_(False)
    score_fn = score or (lambda ids, last: gather_at(reward_model(ids), last))
    torch.manual_seed(train.seed)

    run_cfg.train = train
    for d in (out, out / "value"):
        write_run_files(d, run_cfg, tok)
    train_p = copy.deepcopy(train)
    train_p.max_steps = cfg.iterations * cfg.epochs * -(-cfg.prompts_per_iter // cfg.minibatch)
    p_trainer = Trainer(policy, train_p, out, show_progress=False)
    v_trainer = Trainer(value_model, train_p, out / "value", show_progress=False)
    kl_ctl = AdaptiveKL(cfg.kl_beta, cfg.kl_target, cfg.kl_horizon)
    engine = Engine(policy, tok, max_batch=cfg.prompts_per_iter)
    tasks = [t.strip() for t in cfg.tasks.split(",") if t.strip()]
    problems = world_prompts(tasks, cfg.prompts_per_iter * cfg.iterations, train.seed)
    rng = random.Random(train.seed)
    p_obj, v_obj = _policy_objective(cfg.temperature, cfg.clip), _value_objective(cfg.vf_clip)
    last: dict[str, Any] = {}
    for it in range(cfg.iterations):
        chunk = problems[it * cfg.prompts_per_iter : (it + 1) * cfg.prompts_per_iter]
        prompts = [
            chat_prompt_ids(tok, world.prompt(p, rng.random() < cfg.step_by_step_fraction))
            for p in chunk
        ]
        params = SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=train.seed + it
        )
        t0 = time.perf_counter()
        comps = [c[0] for c in engine.generate(prompts, params)]
        t1 = time.perf_counter()
        ids, lengths = pad_rows(
            [p + c.token_ids for p, c in zip(prompts, comps, strict=True)], tok.pad_id
        )
        prompt_lens = torch.tensor([len(p) for p in prompts])
        mask = response_mask(prompt_lens, lengths, ids.shape[1])
        ended = torch.tensor([c.finish_reason == "stop" for c in comps])
        with torch.no_grad():
            policy.eval()
            scored = rollout_logprobs(policy, ref, ids, cfg.temperature)
            old_logp = scored.logp
            raw = score_fn(ids, lengths - 1)
            penalised = penalise_unended(raw, ended, cfg.no_eos_penalty)
            old_values = value_model(ids)[:, :-1] * mask
            # the penalty is the sampled log-ratio (Ziegler et al.'s reward); the logged KL is the
            # exact next-token KL summed along each response (never negative, see above)
            kl = (old_logp - scored.ref_logp) * mask
            rewards = per_token_rewards(penalised, kl, mask, kl_ctl.beta)
            adv, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
            adv = whiten_advantages(adv, mask)
        batch = {
            "ids": ids,
            "mask": mask,
            "old_logp": old_logp,
            "adv": adv,
            "old_values": old_values,
            "returns": returns,
        }
        t2 = time.perf_counter()
        stats: dict[str, list[float]] = {}
        for _ in range(cfg.epochs):
            order = torch.randperm(len(prompts))
            for lo in range(0, len(prompts), cfg.minibatch):
                idx = order[lo : lo + cfg.minibatch]
                mb = {k: v[idx] for k, v in batch.items()}
                for k, v in {**p_trainer.step(p_obj, [mb]), **v_trainer.step(v_obj, [mb])}.items():
                    stats.setdefault(k, []).append(v)
        t3 = time.perf_counter()
        mean_kl = float((scored.kl * mask).sum(1).mean())
        golds = [gold(p, c.text) for p, c in zip(chunk, comps, strict=True)]
        row = {
            "step": it + 1,
            "tokens": int(mask.sum()),
            "score": float(raw.mean()),
            "penalised_score": float(penalised.mean()),
            "gold": sum(golds) / len(golds),
            "kl": mean_kl,
            "total_reward": float(rewards.sum(1).mean()),
            "kl_beta": kl_ctl.beta,
            "response_len": float((lengths - prompt_lens).float().mean()),
            "end_rate": float(ended.float().mean()),
            "time_generate_s": t1 - t0,
            "time_score_s": t2 - t1,
            "time_train_s": t3 - t2,
            **{k: sum(v) / len(v) for k, v in stats.items() if k not in ("lr", "grad_norm")},
        }
        row["train_loss"] = row.pop("loss", float("nan"))
        kl_ctl.update(mean_kl, len(prompts))
        p_trainer.log(row)
        with (out / "samples.jsonl").open("a") as f:  # a few rollouts per iteration, to read
            for i in range(min(2, len(chunk))):
                sample = {
                    "step": it + 1,
                    "question": chunk[i].question,
                    "response": comps[i].text,
                    "ended": bool(ended[i]),
                    "score": float(raw[i]),
                    "gold": golds[i],
                }
                f.write(json.dumps(sample) + "\n")
        last = row
        if show_progress:
            console.print(
                f"iter {it + 1:>4}  score {row['score']:+.3f}  kl {row['kl']:.3f}  "
                f"beta {row['kl_beta']:.3f}  reward {row['total_reward']:+.3f}  "
                f"entropy {row.get('entropy', 0):.3f}  clipfrac {row.get('clipfrac', 0):.3f}  "
                f"len {row['response_len']:.1f}  end {row['end_rate']:.2f}",
                soft_wrap=True,  # one line per iteration, also in a log file
            )
    p_trainer.save()
    v_trainer.save()
    plot_ppo_curves(out / "metrics.jsonl", out / "ppo_curves.png")
    (out / "ppo.json").write_text(
        json.dumps({"sft": str(sft_run), "reward": str(reward_run), "last": last}, indent=2) + "\n"
    )
    return last


PPO_CURVES = (
    ("score", "reward-model score (raw)"),
    ("gold", "gold reward (hidden judge)"),
    ("kl", "KL to the reference (per response)"),
    ("kl_beta", "KL coefficient beta"),
    ("entropy", "entropy (per token)"),
    ("clipfrac", "clip fraction"),
    ("response_len", "response length (tokens)"),
    ("end_rate", "responses that end"),
)


def plot_ppo_curves(metrics: Path, path: Path) -> None:
    """The PPO training curves of a run's metrics.jsonl against iteration (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(2, 4, figsize=(15, 6), sharex=True)
    for ax, (key, title) in zip(axes.flat, PPO_CURVES, strict=True):
        pts = [(r["step"], r[key]) for r in rows if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), ".-")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("PPO iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
