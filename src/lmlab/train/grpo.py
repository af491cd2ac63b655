"""Group Relative Policy Optimization (Shao et al. 2024): advantages without a value model.

Each prompt gets a group of k sampled responses; a response's advantage is its reward minus the
group mean, divided by the group standard deviation, and applies to every token it generated.

Two choices differ from the paper's equation (3), on purpose:
- the loss is averaged over every response token of the batch at once (DAPO's token-level
  loss, Yu et al. 2025), not per response and then over the group: with the paper's form a token
  of a long response weighs less than a token of a short one, so long wrong chains are punished
  less per token and long right ones rewarded less;
- the group's standard deviation is the population one (divide by k), not the sample one
  (k - 1): the advantages are sqrt(k / (k - 1)) times those of the sample std, one factor for
  every group (k is fixed), which the learning rate absorbs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor, nn

from lmlab.config import GRPOConfig, TrainConfig
from lmlab.model.moe import with_router_losses
from lmlab.train.checkpoint import load_run, write_run_files
from lmlab.train.loop import Trainer, init_distributed
from lmlab.train.pretrain import check_new_run_dir
from lmlab.train.rl import kl_estimate, masked_mean, pad_rows, response_mask, token_logprobs

console = Console(stderr=True)


def group_advantages(rewards: Tensor, eps: float = 1e-6, scale: bool = True) -> Tensor:
    """rewards [G, k] (G prompts x k responses) -> advantages [G, k], zero-mean per group.

    With `scale` the advantages are divided by the group's population std (divide by k; see the
    module docstring). A group whose rewards all tie gets 0: all right or all wrong teaches
    nothing, as it should."""
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (rewards.std(dim=1, keepdim=True, unbiased=False) + eps)


def grpo_objective(temperature: float, kl_beta: float) -> Any:
    """Loss = -sum_i sum_t A_i ratio_it / sum_i |o_i| (ratio = 1 in value, on-policy), plus an
    optional k3 KL to the reference: both averaged over every response token of the batch
    (token-level, as DAPO), not per response first (see the module docstring)."""

    def objective(model: nn.Module, b: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logp = token_logprobs(model(b["ids"]), b["ids"], temperature)
        ratio = torch.exp(logp - logp.detach())
        loss = with_router_losses(model, masked_mean(-b["adv"][:, None] * ratio, b["mask"]))
        metrics = {}
        if kl_beta > 0:
            kl = masked_mean(kl_estimate(logp, b["ref_logp"], "k3"), b["mask"])
            loss = loss + kl_beta * kl
            metrics["kl"] = float(kl.detach())
        return loss, metrics

    return objective


def train_grpo(
    sft_run: Path,
    out: Path,
    train: TrainConfig,
    cfg: GRPOConfig,
    show_progress: bool = True,
    reward: Callable[[Any, str], float] | None = None,
) -> dict[str, Any]:
    """GRPO from `sft_run` on one world task; writes a normal run directory to `out`.

    `reward(problem, response)` defaults to the task's verifier (1 if the extracted answer is
    right); the before/after accuracy is the verifier's either way."""
    from lmlab.data import world
    from lmlab.eval.harness import chat_prompt, evaluate, score
    from lmlab.infer import Engine, SamplingParams

    cfg.validate()
    train.validate()
    check_new_run_dir(out)
    policy, tok, run_cfg = load_run(sft_run)
    name, knobs = world.parse_task(cfg.task)
    _, device = init_distributed(train.device)
    torch.manual_seed(train.seed)
    ref = load_run(sft_run)[0] if cfg.kl_beta > 0 else None
    reward_fn = reward or (lambda problem, text: score(problem, text)["correct"])
    strategy = "cot" if cfg.step_by_step else "direct"
    before = evaluate(policy, tok, [cfg.task], strategy, cfg.eval_n)["tasks"][cfg.task]
    console.print(f"SFT accuracy on {cfg.task} ({strategy}): {before['accuracy']:.3f}")

    run_cfg.train = train
    write_run_files(out, run_cfg, tok)
    trainer = Trainer(policy, train, out, device=device, show_progress=False)
    engine = Engine(policy, tok, max_batch=cfg.prompts_per_step * cfg.k)
    objective = grpo_objective(cfg.temperature, cfg.kl_beta)
    n_problems = cfg.prompts_per_step * train.max_steps
    problems = world.generate(name, n_problems, seed=train.seed, split="train", **knobs)
    with Progress(disable=not show_progress) as progress:
        bar = progress.add_task("grpo", total=train.max_steps)
        while trainer.step_count < train.max_steps:
            step = trainer.step_count
            lo = step * cfg.prompts_per_step
            batch_problems = problems[lo : lo + cfg.prompts_per_step]
            prompts = [chat_prompt(tok, p, cfg.step_by_step) for p in batch_problems]
            params = SamplingParams(
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                n=cfg.k,
                seed=train.seed + step,
            )
            outs = engine.generate(prompts, params)
            rewards = torch.tensor(
                [
                    [reward_fn(p, c.text) for c in comps]
                    for p, comps in zip(batch_problems, outs, strict=True)
                ]
            )
            adv = group_advantages(rewards).flatten()
            seqs = [
                pr + c.token_ids for pr, comps in zip(prompts, outs, strict=True) for c in comps
            ]
            ids, lengths = pad_rows(seqs, tok.pad_id)
            prompt_lens = torch.tensor([len(pr) for pr in prompts for _ in range(cfg.k)])
            b = {"ids": ids, "mask": response_mask(prompt_lens, lengths, ids.shape[1]), "adv": adv}
            if ref is not None:
                with torch.no_grad():
                    b["ref_logp"] = token_logprobs(ref(ids), ids, cfg.temperature)
            metrics = trainer.step(objective, [b], n_tokens=int(b["mask"].sum()))
            row = {
                "step": trainer.step_count,
                "tokens": trainer.tokens,
                "train_loss": metrics.pop("loss"),
                "reward": float(rewards.mean()),
                "solved_groups": float((rewards.max(1).values > 0).float().mean()),
                "response_len": float(lengths.float().mean() - prompt_lens.float().mean()),
                **metrics,
            }
            trainer.log(row)
            progress.update(bar, advance=1, description=f"grpo reward {row['reward']:.3f}")
    trainer.save()
    after = evaluate(policy, tok, [cfg.task], strategy, cfg.eval_n)["tasks"][cfg.task]
    summary = {
        "task": cfg.task,
        "strategy": strategy,
        "sft_accuracy": before["accuracy"],
        "grpo_accuracy": after["accuracy"],
        "eval_n": cfg.eval_n,
        "steps": train.max_steps,
    }
    (out / "grpo.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(
        f"GRPO accuracy on {cfg.task}: {before['accuracy']:.3f} -> {after['accuracy']:.3f}"
    )
    return summary
