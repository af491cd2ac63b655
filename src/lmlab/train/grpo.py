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

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from torch import Tensor, nn

from lmlab.config import GRPOConfig, TrainConfig, build_config
from lmlab.data import world
from lmlab.eval.harness import evaluate
from lmlab.infer import Engine, SamplingParams
from lmlab.model.moe import with_router_losses
from lmlab.model.scoring import pad_rows, response_mask, token_logprobs
from lmlab.runs import require_stage, write_json
from lmlab.train.rl import kl_estimate, masked_mean
from lmlab.train.stage import StageResult, settings_of, start_stage

console = Console(stderr=True)

RewardFn = Callable[[world.Problem, str], float]
"""The reward of a response (text) to a world problem."""


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
    reward: RewardFn = world.reward,
    resume: bool = False,
) -> StageResult:
    """GRPO from `sft_run` on one world task; writes a normal run directory to `out`.

    `reward(problem, response)` defaults to the task's verifier (`world.reward`: 1 if the
    extracted answer is right); the before/after accuracy is the verifier's either way. Under
    torchrun each rank samples its own prompts. Checkpoints every `train.ckpt_every` (else
    `eval_every`) steps, so `resume` continues a killed run exactly (rollouts are seeded by
    step)."""
    cfg.validate()
    settings = settings_of(train=train, grpo=cfg)
    stage = start_stage("grpo", out, train, settings, sft_run, resume, show_progress)
    policy, tok, run_cfg = stage.load_base(sft_run)
    name, knobs = world.parse_task(cfg.task)
    ref = stage.load_base(sft_run)[0] if cfg.kl_beta > 0 else None
    strategy = "cot" if cfg.step_by_step else "direct"

    def accuracy() -> float:
        report = evaluate(policy, tok, [cfg.task], strategy, cfg.eval_n)
        return float(report["tasks"][cfg.task]["accuracy"])

    before = stage.once("sft_accuracy", accuracy)  # on the SFT weights, before any step
    if stage.is_main:
        console.print(f"SFT accuracy on {cfg.task} ({strategy}): {before:.3f}")

    run_cfg.train = train
    stage.write_run_files(run_cfg, tok)
    trainer = stage.trainer(policy, show_progress=False)
    engine = Engine(policy, tok, max_batch=cfg.prompts_per_step * cfg.k, device=stage.device)
    objective = grpo_objective(cfg.temperature, cfg.kl_beta)
    rank, world_size = stage.dist.rank, stage.dist.world
    n_problems = cfg.prompts_per_step * train.max_steps * world_size
    problems = world.generate(name, n_problems, seed=train.seed, split="train", **knobs)
    ckpt_every = train.ckpt_every or train.eval_every
    with Progress(disable=not stage.show_progress) as progress:
        bar = progress.add_task("grpo", total=train.max_steps, completed=trainer.step_count)
        while trainer.step_count < train.max_steps:
            step = trainer.step_count
            part = step * world_size + rank  # this rank's share of the step's prompts
            batch_problems = problems[
                part * cfg.prompts_per_step : (part + 1) * cfg.prompts_per_step
            ]
            prompts = [world.prompt_ids(tok, p, cfg.step_by_step) for p in batch_problems]
            params = SamplingParams(
                max_new_tokens=cfg.max_new_tokens,
                temperature=cfg.temperature,
                n=cfg.k,
                seed=train.seed + part,
            )
            outs = engine.generate(prompts, params)
            rewards = torch.tensor(
                [
                    [reward(p, c.text) for c in comps]
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
                with torch.no_grad(), stage.autocast():
                    on_device = ids.to(stage.device)
                    b["ref_logp"] = token_logprobs(ref(on_device), on_device, cfg.temperature)
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
            if trainer.step_count % ckpt_every == 0 or trainer.step_count == train.max_steps:
                trainer.save()
            progress.update(bar, advance=1, description=f"grpo reward {row['reward']:.3f}")
    after = accuracy()
    summary = {
        "task": cfg.task,
        "strategy": strategy,
        "sft_accuracy": before,
        "grpo_accuracy": after,
        "eval_n": cfg.eval_n,
        "steps": train.max_steps,
    }
    if stage.is_main:
        write_json(out / "grpo.json", summary)
        console.print(f"GRPO accuracy on {cfg.task}: {before:.3f} -> {after:.3f}")
    return stage.finish(summary)


def resume(out: Path, show_progress: bool = True) -> StageResult:
    """Continue the GRPO run in `out` (settings and SFT run from its stage.json); a custom
    reward function given to the first run is not recorded, so resume uses the verifier."""
    record = require_stage(out, "grpo")
    settings = record["settings"]
    return train_grpo(
        Path(record["base"]),
        out,
        build_config(TrainConfig, settings["train"]),
        build_config(GRPOConfig, settings["grpo"]),
        show_progress,
        resume=True,
    )
