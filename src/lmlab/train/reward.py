"""Reward modelling: the Bradley-Terry objective on preference pairs (Christiano et al. 2017;
Ouyang et al. 2022), and the driver that trains a reward model from an SFT run.

P(chosen > rejected) = sigmoid(r(chosen) - r(rejected)); the loss is its negative log-likelihood.
The reward model is the SFT transformer with a scalar head (`model/heads.py`), read at the
response's closing <|end|> token, and normalised after training so that the responses in the
preference data (sampled from the SFT policy) score mean 0 and standard deviation 1 (Ziegler et
al. 2019): a PPO penalty or KL coefficient then means the same against any reward model.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import Tensor, nn

from lmlab.config import TrainConfig, build_config
from lmlab.data.prefs import Pair, PrefsError, chat_prompt_ids, read_prefs, response_ids
from lmlab.data.tokenizer import Tokenizer
from lmlab.model.heads import ScalarHeadModel, normalise_reward
from lmlab.model.moe import with_router_losses
from lmlab.model.scoring import gather_at, pad_rows, score_rows
from lmlab.runs import REWARD_FILE, require_stage, write_json
from lmlab.train.stage import StageResult, settings_of, start_stage

console = Console(stderr=True)


def bradley_terry(r_chosen: Tensor, r_rejected: Tensor) -> tuple[Tensor, Tensor]:
    """(mean loss, accuracy) for reward pairs [B]; accuracy counts strict wins of `chosen`."""
    loss = -F.logsigmoid(r_chosen - r_rejected).mean()
    return loss, (r_chosen > r_rejected).float().mean()


def encode_pairs(
    tok: Tokenizer, pairs: list[Pair], context: int
) -> list[tuple[list[int], list[int]]]:
    """(chosen ids, rejected ids) of each pair that fits the context: chat prompt + reply."""
    out = []
    for p in pairs:
        prompt = chat_prompt_ids(tok, p.prompt)
        c, r = prompt + response_ids(tok, p.chosen), prompt + response_ids(tok, p.rejected)
        if max(len(c), len(r)) <= context:
            out.append((c, r))
    return out


def pair_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Tensor]:
    """Chosen rows then rejected rows, padded to one width, with each row's last index."""
    ids, lengths = pad_rows([c for c, _ in rows] + [r for _, r in rows], pad_id)
    return {"ids": ids, "last": lengths - 1}


def bt_objective(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    scores = gather_at(model(batch["ids"]), batch["last"])
    chosen, rejected = scores.chunk(2)
    loss, acc = bradley_terry(chosen, rejected)
    tokens = float((batch["last"] + 1).sum())
    return with_router_losses(model, loss), {"accuracy": float(acc), "tokens": tokens}


def train_reward_model(
    sft_run: Path,
    data: Path,
    out: Path,
    train: TrainConfig,
    val_fraction: float = 0.1,
    show_progress: bool = True,
    resume: bool = False,
) -> StageResult:
    """Train a Bradley-Terry reward model from `sft_run` on preference pairs in `data`."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val fraction must be in (0, 1), got {val_fraction}")
    settings = settings_of(train=train, data=data, val_fraction=val_fraction)
    stage = start_stage("rm", out, train, settings, sft_run, resume, show_progress)
    trunk, tok, cfg = stage.load_base(sft_run)
    pairs = read_prefs(data)
    rows = encode_pairs(tok, pairs, cfg.model.context_length)
    if len(rows) < 4:
        raise PrefsError(f"{data}: need at least 4 usable pairs, found {len(rows)}")
    order = list(range(len(rows)))
    random.Random(train.seed).shuffle(order)
    n_val = max(2, int(len(rows) * val_fraction))
    val = [rows[i] for i in order[:n_val]]
    train_rows = [rows[i] for i in order[n_val:]]
    model = ScalarHeadModel(trunk.train())
    cfg.train = train
    stage.write_run_files(cfg, tok)
    trainer = stage.trainer(model)

    def batch(step: int, micro: int) -> dict[str, Tensor]:
        rng = np.random.default_rng([train.seed, step, micro, stage.dist.rank])
        pick = rng.integers(0, len(train_rows), train.batch_size)
        return pair_batch([train_rows[i] for i in pick], tok.pad_id)

    val_batches = [
        pair_batch(val[i : i + train.batch_size], tok.pad_id)
        for i in range(0, len(val), train.batch_size)
    ]
    trainer.fit(bt_objective, batch, 0, lambda: val_batches)

    # held-out accuracy against the "longer answer wins" baseline (the issue's) and its mirror,
    # and on the pairs where length does not give the answer away (chosen not the shorter one)
    with stage.autocast():
        sc = score_rows(model, [c for c, _ in val], tok.pad_id).cpu()
        sr = score_rows(model, [r for _, r in val], tok.pad_id).cpu()
    right = (sc > sr).float()
    accuracy = float(right.mean())
    longer = float(np.mean([len(c) > len(r) for c, r in val]))
    not_shorter = torch.tensor([len(c) >= len(r) for c, r in val])
    shorter = 1.0 - float(not_shorter.float().mean())
    acc_not_shorter = float(right[not_shorter].mean()) if not_shorter.any() else None

    # normalise: responses sampled from the SFT policy score mean 0, std 1 (measured once, on
    # the trained head: a resume after this point must not normalise twice)
    def moments() -> list[float]:
        everything = [c for c, _ in train_rows] + [r for _, r in train_rows]
        with stage.autocast():
            raw = score_rows(model, everything, tok.pad_id)
        return [float(raw.mean()), float(raw.std(unbiased=False))]

    offset, std = stage.once("reward_moments", moments)
    if not trainer.resumed_state.get("normalised"):  # the saved head may be normalised already
        normalise_reward(model, offset, std)
        trainer.save({"normalised": True})
    summary = {
        "kind": "reward",
        "sft": str(sft_run),
        "data": str(data),
        "train_pairs": len(train_rows),
        "val_pairs": len(val),
        "heldout_accuracy": accuracy,
        "length_baseline_accuracy": longer,
        "shorter_baseline_accuracy": shorter,
        "accuracy_chosen_not_shorter": acc_not_shorter,
        "pairs_chosen_not_shorter": int(not_shorter.sum()),
        "offset": offset,
        "std": std,
    }
    if stage.is_main:
        write_json(out / REWARD_FILE, summary)
        console.print(
            f"held-out accuracy {accuracy:.3f} (longer-answer baseline {longer:.3f}, "
            f"shorter-answer {shorter:.3f}) on {len(val)} pairs"
            + (
                f"; {acc_not_shorter:.3f} on the {int(not_shorter.sum())} whose chosen answer "
                "is not the shorter"
                if acc_not_shorter is not None
                else ""
            )
        )
    return stage.finish(summary)


def resume(out: Path, show_progress: bool = True) -> StageResult:
    """Continue the reward-model run in `out` (settings and SFT run from its stage.json)."""
    record = require_stage(out, "rm")
    settings = record["settings"]
    return train_reward_model(
        Path(record["base"]),
        Path(settings["data"]),
        out,
        build_config(TrainConfig, settings["train"]),
        float(settings["val_fraction"]),
        show_progress,
        resume=True,
    )
