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

from lmlab.config import PPOConfig, TrainConfig, build_config
from lmlab.data import world
from lmlab.data.prefs import world_prompts
from lmlab.infer import Engine, SamplingParams
from lmlab.model.load import load_reward_model
from lmlab.model.moe import with_router_losses
from lmlab.model.scoring import gather_at, pad_rows, response_mask, token_logprobs
from lmlab.runs import METRICS_FILE, read_metrics, require_stage, write_atomic, write_json
from lmlab.train.rl import entropy, masked_mean, masked_whiten
from lmlab.train.stage import StageResult, settings_of, start_stage

console = Console(stderr=True)

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""Scores [B] of padded rows `ids` [B, T], each read at its last token `last` [B]."""
GoldFn = Callable[[world.Problem, str], float]
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
            "tokens": float(b["mask"].sum()),  # response tokens trained on (the loop sums them)
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
    gold: GoldFn = world.gold_score,
    resume: bool = False,
) -> StageResult:
    """PPO from `sft_run` against the reward model in `reward_run`; `out` holds the policy run
    (loadable like any run) and `out/value` the value model.

    `score` replaces the reward model's score of a rollout (the value model still starts from
    `reward_run`); `gold` is the hidden judge that is logged beside it. Both models are
    checkpointed every `train.ckpt_every` iterations (10 when unset) with the KL controller's
    state, so `resume` continues a killed run exactly. Under torchrun each rank rolls out its own
    prompts and the logged statistics are averaged over ranks."""
    cfg.validate()
    settings = settings_of(train=train, ppo=cfg, reward=reward_run)
    stage = start_stage("ppo", out, train, settings, sft_run, resume, show_progress)
    policy, tok, run_cfg = stage.load_base(sft_run)
    reward_model, rm_tok = load_reward_model(reward_run, stage.device)
    if rm_tok.hf.to_str() != tok.hf.to_str():
        raise ValueError(f"reward model {reward_run} uses a different tokenizer from {sft_run}")
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    value_model = copy.deepcopy(reward_model)  # value model initialised from the reward model
    reward_model.requires_grad_(False)
    score_fn = score or (lambda ids, last: gather_at(reward_model(ids), last))

    run_cfg.train = train
    stage.write_run_files(run_cfg, tok)
    stage.write_run_files(run_cfg, tok, out / "value")
    train_p = copy.deepcopy(train)
    train_p.max_steps = cfg.iterations * cfg.epochs * -(-cfg.prompts_per_iter // cfg.minibatch)
    p_trainer = stage.trainer(policy, train=train_p, show_progress=False)
    v_trainer = stage.trainer(value_model, out / "value", train_p, show_progress=False)
    start = int(p_trainer.resumed_state.get("iteration", 0))
    kl_ctl = AdaptiveKL(
        float(p_trainer.resumed_state.get("kl_beta", cfg.kl_beta)), cfg.kl_target, cfg.kl_horizon
    )
    if stage.resume and stage.is_main:
        _truncate_samples(out / SAMPLES_FILE, start)
    engine = Engine(policy, tok, max_batch=cfg.prompts_per_iter, device=stage.device)
    rank, world_size = stage.dist.rank, stage.dist.world
    problems = world_prompts(
        cfg.tasks, cfg.prompts_per_iter * cfg.iterations * world_size, train.seed
    )
    p_obj, v_obj = _policy_objective(cfg.temperature, cfg.clip), _value_objective(cfg.vf_clip)
    ckpt_every = train.ckpt_every or 10
    last: dict[str, Any] = {}
    for it in range(start, cfg.iterations):
        part = it * world_size + rank  # this rank's share of the iteration's prompts
        chunk = problems[part * cfg.prompts_per_iter : (part + 1) * cfg.prompts_per_iter]
        rng = random.Random(f"{train.seed}|{part}")  # which prompts ask for a worked solution
        prompts = [
            world.prompt_ids(tok, p, rng.random() < cfg.step_by_step_fraction) for p in chunk
        ]
        params = SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=train.seed + part
        )
        t0 = time.perf_counter()
        comps = [c[0] for c in engine.generate(prompts, params)]
        t1 = time.perf_counter()
        ids, lengths = pad_rows(
            [p + c.token_ids for p, c in zip(prompts, comps, strict=True)], tok.pad_id
        )
        ids, lengths = ids.to(stage.device), lengths.to(stage.device)
        prompt_lens = torch.tensor([len(p) for p in prompts], device=stage.device)
        mask = response_mask(prompt_lens, lengths, ids.shape[1])
        ended = torch.tensor([c.finish_reason == "stop" for c in comps], device=stage.device)
        with torch.no_grad(), stage.autocast():
            policy.eval()
            scored = rollout_logprobs(policy, ref, ids, cfg.temperature)
            old_logp = scored.logp
            raw = score_fn(ids, lengths - 1).float()
            penalised = penalise_unended(raw, ended, cfg.no_eos_penalty)
            old_values = value_model(ids)[:, :-1].float() * mask
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
                idx = order[lo : lo + cfg.minibatch].to(stage.device)
                mb = {k: v[idx] for k, v in batch.items()}
                for k, v in {**p_trainer.step(p_obj, [mb]), **v_trainer.step(v_obj, [mb])}.items():
                    stats.setdefault(k, []).append(v)
        t3 = time.perf_counter()
        golds = [gold(p, c.text) for p, c in zip(chunk, comps, strict=True)]
        rollout = p_trainer.all_reduce_mean(
            {
                "response_tokens": float(mask.sum()),
                "score": float(raw.mean()),
                "penalised_score": float(penalised.mean()),
                "gold": sum(golds) / len(golds),
                "kl": float((scored.kl * mask).sum(1).mean()),
                "total_reward": float(rewards.sum(1).mean()),
                "response_len": float((lengths - prompt_lens).float().mean()),
                "end_rate": float(ended.float().mean()),
            }
        )
        row = {
            "step": it + 1,
            **rollout,
            "tokens": p_trainer.tokens,  # response tokens trained on so far, every epoch counted
            "response_tokens": int(rollout["response_tokens"] * world_size),
            "kl_beta": kl_ctl.beta,
            "time_generate_s": t1 - t0,
            "time_score_s": t2 - t1,
            "time_train_s": t3 - t2,
            **{k: sum(v) / len(v) for k, v in stats.items() if k not in ("lr", "grad_norm")},
        }
        row["train_loss"] = row.pop("loss", float("nan"))
        kl_ctl.update(row["kl"], len(prompts) * world_size)
        p_trainer.log(row)
        if stage.is_main:
            _write_samples(out / SAMPLES_FILE, it + 1, chunk, comps, ended, raw, golds)
        done = it + 1
        if done % ckpt_every == 0 or done == cfg.iterations:
            state = {"iteration": done, "kl_beta": kl_ctl.beta}
            p_trainer.save(state)
            v_trainer.save(state)
        last = row
        if stage.show_progress:
            console.print(
                f"iter {done:>4}  score {row['score']:+.3f}  kl {row['kl']:.3f}  "
                f"beta {row['kl_beta']:.3f}  reward {row['total_reward']:+.3f}  "
                f"entropy {row.get('entropy', 0):.3f}  clipfrac {row.get('clipfrac', 0):.3f}  "
                f"len {row['response_len']:.1f}  end {row['end_rate']:.2f}",
                soft_wrap=True,  # one line per iteration, also in a log file
            )
    last = last or read_metrics(out)[-1]  # a resumed run that had already finished
    if stage.is_main:
        plot_ppo_curves(out / METRICS_FILE, out / "ppo_curves.png")
        write_json(out / "ppo.json", {"sft": str(sft_run), "reward": str(reward_run), "last": last})
    return stage.finish(last)


def resume(out: Path, show_progress: bool = True) -> StageResult:
    """Continue the PPO run in `out` (settings, SFT and reward runs from its stage.json)."""
    record = require_stage(out, "ppo")
    settings = record["settings"]
    return train_ppo(
        Path(record["base"]),
        Path(settings["reward"]),
        out,
        build_config(TrainConfig, settings["train"]),
        build_config(PPOConfig, settings["ppo"]),
        show_progress,
        resume=True,
    )


SAMPLES_FILE = "samples.jsonl"


def _write_samples(
    path: Path,
    iteration: int,
    chunk: list[Any],
    comps: list[Any],
    ended: Tensor,
    raw: Tensor,
    golds: list[float],
) -> None:
    """A few rollouts of the iteration, to read."""
    with path.open("a") as f:
        for i in range(min(2, len(chunk))):
            sample = {
                "step": iteration,
                "question": chunk[i].question,
                "response": comps[i].text,
                "ended": bool(ended[i]),
                "score": float(raw[i]),
                "gold": golds[i],
            }
            f.write(json.dumps(sample) + "\n")


def _truncate_samples(path: Path, iteration: int) -> None:
    """Drop samples written after the checkpoint a resumed run restarts from."""
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if json.loads(ln)["step"] <= iteration]
        write_atomic(path, "".join(ln + "\n" for ln in keep))


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
