"""Direct Preference Optimization (Rafailov et al. 2023): the loss.

L = -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]),
with sequence log-probs summed over response tokens and the reference's precomputed once.
At initialisation (pi == ref) the loss is exactly log 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from lmlab.config import TrainConfig, build_config
from lmlab.data.prefs import chat_prompt_ids, read_prefs, response_ids
from lmlab.model.moe import with_router_losses
from lmlab.model.scoring import model_device, pad_rows, response_mask, sequence_logprobs
from lmlab.runs import require_stage
from lmlab.train.stage import StageResult, settings_of, start_stage

console = Console(stderr=True)


def dpo_loss(
    chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float = 0.1
) -> tuple[Tensor, dict[str, float]]:
    """Mean DPO loss over pairs of sequence log-probs [B], and its implicit-reward metrics."""
    r_w = beta * (chosen - ref_chosen)
    r_l = beta * (rejected - ref_rejected)
    loss = -F.logsigmoid(r_w - r_l).mean()
    margin = (r_w - r_l).detach()
    return loss, {
        "reward_margin": float(margin.mean()),
        "reward_accuracy": float((margin > 0).float().mean()),
    }


def _pairs_batch(rows: list[tuple[list[int], list[int], int]], pad_id: int) -> dict[str, Tensor]:
    seqs = [c for c, _, _ in rows] + [r for _, r, _ in rows]
    ids, lengths = pad_rows(seqs, pad_id)
    prompt_lens = torch.tensor([p for _, _, p in rows] * 2)
    mask = response_mask(prompt_lens, lengths, ids.shape[1])
    return {"ids": ids, "mask": mask, "n_tokens": lengths.sum()}


@torch.no_grad()
def reference_logprobs(
    model: nn.Module, rows: list[tuple[list[int], list[int], int]], pad_id: int, batch: int = 32
) -> tuple[Tensor, Tensor]:
    """The reference's sequence log-probs of every pair's chosen and rejected response ([N]
    each, float32, on the model's device, where the rows are sent)."""
    device = model_device(model)
    chosen, rejected = [], []
    for i in range(0, len(rows), batch):
        b = _pairs_batch(rows[i : i + batch], pad_id)
        c, r = sequence_logprobs(model, b["ids"].to(device), b["mask"].to(device)).float().chunk(2)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def train_dpo(
    sft_run: Path,
    data: Path,
    out: Path,
    train: TrainConfig,
    beta: float = 0.1,
    show_progress: bool = True,
    resume: bool = False,
) -> StageResult:
    """DPO from `sft_run` on preference pairs; the reference (the SFT model) log-probs are
    computed once up front, on the stage's device and under the autocast training uses, so
    only the policy runs during training."""
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    settings = settings_of(train=train, data=data, beta=beta)
    stage = start_stage("dpo", out, train, settings, sft_run, resume, show_progress)
    policy, tok, cfg = stage.load_base(sft_run)
    rows = []
    for p in read_prefs(data):
        prompt = chat_prompt_ids(tok, p.prompt)
        c, r = prompt + response_ids(tok, p.chosen), prompt + response_ids(tok, p.rejected)
        if max(len(c), len(r)) <= cfg.model.context_length:
            rows.append((c, r, len(prompt)))
    if not rows:
        raise ValueError(f"{data}: no preference pair fits the context length")
    with stage.autocast():
        ref_chosen, ref_rejected = reference_logprobs(policy.eval(), rows, tok.pad_id)

    def batch(step: int, micro: int) -> dict[str, Tensor]:
        pick = np.random.default_rng([train.seed, step, micro, stage.dist.rank]).integers(
            0, len(rows), train.batch_size
        )
        b = _pairs_batch([rows[i] for i in pick], tok.pad_id)
        index = torch.from_numpy(pick).to(ref_chosen.device)
        b["ref_chosen"], b["ref_rejected"] = ref_chosen[index], ref_rejected[index]
        return b

    def objective(model: nn.Module, b: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        chosen, rejected = sequence_logprobs(model, b["ids"], b["mask"]).chunk(2)
        loss, metrics = dpo_loss(chosen, rejected, b["ref_chosen"], b["ref_rejected"], beta)
        return with_router_losses(model, loss), {**metrics, "tokens": float(b["n_tokens"])}

    cfg.train = train
    stage.write_run_files(cfg, tok)
    trainer = stage.trainer(policy.train())
    last = trainer.fit(objective, batch, 0)
    if stage.is_main:
        console.print(f"DPO done: {json.dumps({k: round(v, 4) for k, v in last.items()})}")
    return stage.finish(last)


def resume(out: Path, show_progress: bool = True) -> StageResult:
    """Continue the DPO run in `out` (settings and SFT run from its stage.json)."""
    record = require_stage(out, "dpo")
    settings = record["settings"]
    return train_dpo(
        Path(record["base"]),
        Path(settings["data"]),
        out,
        build_config(TrainConfig, settings["train"]),
        float(settings["beta"]),
        show_progress,
        resume=True,
    )
