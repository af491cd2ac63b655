"""Reward over-optimisation made visible (Gao, Schulman & Hilton 2022).

A *proxy* reward model is trained on few and noisy gold labels; optimising against it first
raises the hidden gold reward, then — past some distance from the initial policy — keeps raising
the proxy while the gold reward falls. Distance is d = sqrt(KL(pi || pi_init)). Gao et al.'s
functional forms for the gold reward gain R(d) = gold(d) - gold(0):

    best-of-n:  R(d) = d (alpha - beta d),      with KL_bon(n) = log n - (n - 1) / n
    RL (PPO):   R(d) = d (alpha - beta log d)

Both are linear in (alpha, beta): R = alpha d - beta d f(d), so they are fitted to R itself by
least squares (dividing by d first would multiply the noise of the points near d = 0).

The two arms are measured alike: both sample at one temperature T, and d is the distance from
the same reference, the initial policy at T (best-of-n's KL is analytic; PPO's is measured with
both policies scored at T). The proxy of both is the reward model's raw score, read at each
response's last token; PPO trains on a score where never-ending responses get a penalty
instead, but that penalty is not the proxy and is not plotted.

`run_overopt` does the whole experiment: world preference pairs with label noise -> proxy RM ->
best-of-n curve and a PPO run against the proxy -> fits, a plot and sample responses at the point
where gold turns down while the proxy still rises.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.config import PPOConfig, TrainConfig
from lmlab.data import world
from lmlab.data.prefs import world_prompts
from lmlab.eval.annotate import generate_prefs
from lmlab.infer import Engine, SamplingParams
from lmlab.model.load import load_reward_model, load_run
from lmlab.model.scoring import score_rows
from lmlab.train.ppo import train_ppo
from lmlab.train.reward import train_reward_model

GoldFn = Callable[[world.Problem, str], float]


def bon_kl(n: int) -> float:
    """KL(best-of-n || base) = log n - (n - 1) / n (Stiennon et al. 2020)."""
    return math.log(n) - (n - 1) / n


def fit_form(d: np.ndarray, r: np.ndarray, form: str) -> tuple[float, float]:
    """Least-squares (alpha, beta) of R = alpha d - beta d f(d); f = d (bon) or log d (rl).

    R is linear in (alpha, beta), so this is ordinary least squares on R with the columns
    d and -d f(d); with equal noise on every R it is the best linear unbiased fit (Gauss-Markov),
    unlike a fit of R/d, whose noise grows as 1/d near the start. Points at d = 0 carry no
    information (R = 0 whatever the parameters) and are left out."""
    keep = d > 1e-6
    d, r = d[keep], r[keep]
    if len(d) < 2:
        raise ValueError("need at least two points with d > 0 to fit")
    f = d if form == "bon" else np.log(d)
    design = np.stack([d, -d * f], axis=1)
    (alpha, beta), *_ = np.linalg.lstsq(design, r, rcond=None)
    return float(alpha), float(beta)


def predict_form(d: np.ndarray, alpha: float, beta: float, form: str) -> np.ndarray:
    f = d if form == "bon" else np.log(np.maximum(d, 1e-6))
    return d * (alpha - beta * f)


@torch.no_grad()
def best_of_n(
    sft_run: Path,
    proxy_run: Path,
    tasks: list[str],
    n_prompts: int,
    n_max: int,
    seed: int,
    max_new_tokens: int,
    temperature: float,
    gold: GoldFn = world.gold_score,
) -> list[dict[str, float]]:
    """Proxy and gold reward of the proxy's best of the first n samples, n = 1, 2, 4 .. n_max,
    sampled at `temperature`. The proxy is the raw score at each sample's last token, as PPO
    logs it: the text of a sample that never ended is not closed with an <|end|> it never
    wrote."""
    engine = Engine.from_checkpoint(sft_run)
    tok = engine.tokenizer
    proxy, _ = load_reward_model(proxy_run)
    problems = world_prompts(tasks, n_prompts, seed + 1)
    prompts = [world.prompt_ids(tok, p, i % 2 == 0) for i, p in enumerate(problems)]
    params = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, n=n_max, seed=seed
    )
    outs = engine.generate(prompts, params)
    proxy_s = np.zeros((len(prompts), n_max))
    gold_s = np.zeros((len(prompts), n_max))
    for i, (p, ids, comps) in enumerate(zip(problems, prompts, outs, strict=True)):
        rows = [ids + c.token_ids for c in comps]
        proxy_s[i] = score_rows(proxy, rows, tok.pad_id).cpu().numpy()
        gold_s[i] = [gold(p, c.text) for c in comps]
    curve = []
    n = 1
    while n <= n_max:
        best = proxy_s[:, :n].argmax(1)
        rows = np.arange(len(prompts))
        curve.append(
            {
                "n": n,
                "d": math.sqrt(bon_kl(n)),
                "proxy": float(proxy_s[rows, best].mean()),
                "gold": float(gold_s[rows, best].mean()),
            }
        )
        n *= 2
    return curve


def run_overopt(
    sft_run: Path,
    out: Path,
    tasks: list[str],
    n_pref_prompts: int = 300,
    noise: float = 0.25,
    rm_train: TrainConfig | None = None,
    ppo: PPOConfig | None = None,
    ppo_train: TrainConfig | None = None,
    bon_prompts: int = 64,
    bon_max: int = 16,
    seed: int = 0,
    show_progress: bool = True,
    gold: GoldFn = world.gold_score,
) -> dict[str, Any]:
    """The whole over-optimisation experiment into directory `out` (see the module docstring).

    Both arms sample at `ppo.temperature`. `gold` is the hidden judge: it labels the proxy's
    (noisy) preference pairs and scores both arms' responses."""
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; choose another --out")
    load_run(sft_run)  # a missing or damaged run is refused before the study makes its folder
    out.mkdir(parents=True, exist_ok=True)
    ppo = ppo or PPOConfig(tasks=list(tasks), iterations=60, kl_beta=0.0)
    rm_train = rm_train or TrainConfig(
        max_steps=150, lr=1e-4, min_lr=1e-5, warmup_steps=10, batch_size=16, eval_every=50
    )
    ppo_train = ppo_train or TrainConfig(lr=3e-5, min_lr=3e-5, warmup_steps=1)
    generate_prefs(
        sft_run,
        tasks,
        n_pref_prompts,
        4,
        out / "prefs.jsonl",
        noise,
        seed,
        max_new_tokens=ppo.max_new_tokens,
        margin=0.0,  # every distinct pair: the proxy is meant to learn from noisy labels
        show_progress=show_progress,
        judge=gold,
    )
    proxy = train_reward_model(
        sft_run, out / "prefs.jsonl", out / "proxy_rm", rm_train, show_progress=show_progress
    ).summary
    bon = best_of_n(
        sft_run,
        out / "proxy_rm",
        tasks,
        bon_prompts,
        bon_max,
        seed,
        ppo.max_new_tokens,
        ppo.temperature,
        gold,
    )
    train_ppo(sft_run, out / "proxy_rm", out / "ppo", ppo_train, ppo, show_progress, gold=gold)
    rl = [json.loads(x) for x in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]

    d_bon = np.array([r["d"] for r in bon])
    g_bon = np.array([r["gold"] for r in bon]) - bon[0]["gold"]
    d_rl = np.sqrt(np.maximum([r["kl"] for r in rl], 0.0))
    g_rl = np.array([r["gold"] for r in rl]) - rl[0]["gold"]
    p_rl = np.array([r["score"] for r in rl]) - rl[0]["score"]
    fits = {"bon": fit_form(d_bon, g_bon, "bon"), "rl": fit_form(d_rl, g_rl, "rl")}
    peak = int(np.argmax(_smooth(g_rl)))
    turned = bool(peak < len(rl) - 1 and p_rl[-1] > p_rl[peak] and g_rl[-1] < g_rl[peak])
    samples = [json.loads(x) for x in (out / "ppo" / "samples.jsonl").read_text().splitlines()]
    summary = {
        "proxy_heldout_accuracy": proxy["heldout_accuracy"],
        "label_noise": noise,
        "temperature": ppo.temperature,
        "best_of_n": bon,
        "rl_fit": dict(zip(("alpha", "beta"), fits["rl"], strict=True)),
        "bon_fit": dict(zip(("alpha", "beta"), fits["bon"], strict=True)),
        "gold_peak_step": rl[peak]["step"],
        "gold_fell_while_proxy_rose": turned,
        "samples_at_peak": [s for s in samples if s["step"] == rl[peak]["step"]],
        "samples_at_end": [s for s in samples if s["step"] == rl[-1]["step"]],
        "ppo": asdict(ppo),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_overopt(
        out / "overopt.png",
        d_bon,
        bon,
        fits["bon"],
        d_rl,
        g_rl,
        p_rl,
        fits["rl"],
        ppo.temperature,
    )
    return summary


def _smooth(x: np.ndarray, k: int = 5) -> np.ndarray:
    if len(x) < k:
        return x
    return np.convolve(x, np.ones(k) / k, mode="same")


def plot_overopt(
    path: Path,
    d_bon: np.ndarray,
    bon: list[dict[str, float]],
    fit_bon: tuple[float, float],
    d_rl: np.ndarray,
    g_rl: np.ndarray,
    p_rl: np.ndarray,
    fit_rl: tuple[float, float],
    temperature: float,
) -> None:
    """Gold and proxy (raw reward-model score) gain against sqrt(KL), with the fitted gold
    curves (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    g_bon = np.array([r["gold"] for r in bon]) - bon[0]["gold"]
    p_bon = np.array([r["proxy"] for r in bon]) - bon[0]["proxy"]
    for ax, d, g, p, fit, form, title in (
        (axes[0], d_bon, g_bon, p_bon, fit_bon, "bon", "best-of-n"),
        (axes[1], d_rl, g_rl, p_rl, fit_rl, "rl", "PPO against the proxy"),
    ):
        grid = np.linspace(max(1e-3, d.min()), d.max() * 1.05, 100)
        ax.plot(d, p, "o-", label="proxy (raw reward-model score)", alpha=0.7)
        ax.plot(d, g, "s-", label="gold reward", alpha=0.7)
        ax.plot(
            grid,
            predict_form(grid, *fit, form),
            "k--",
            label=f"gold fit: alpha={fit[0]:.2f}, beta={fit[1]:.2f}",
        )
        ax.set_xlabel(f"sqrt(KL to the initial policy), both at T = {temperature:g}")
        ax.set_ylabel("reward gain over the initial policy")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
