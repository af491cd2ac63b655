"""Tests for lmlab.train.reward."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmlab.config import TrainConfig
from lmlab.data.prefs import PrefsError, read_prefs
from lmlab.model.load import load_reward_model
from lmlab.model.scoring import score_rows
from lmlab.train.reward import bradley_terry, encode_pairs, train_reward_model


def test_bradley_terry_toy_case() -> None:
    rc = torch.tensor([2.0, 0.0, -1.0, 0.5])
    rr = torch.tensor([0.0, 0.0, 1.0, 0.0])
    loss, acc = bradley_terry(rc, rr)
    expected = (
        sum(math.log1p(math.exp(-(c - r))) for c, r in zip(rc.tolist(), rr.tolist(), strict=True))
        / 4
    )
    assert abs(loss.item() - expected) < 1e-6
    assert acc.item() == 0.5  # one tie counts as a miss


def test_reward_model_learns_and_is_normalised(
    chat_run: Path, prefs_file: Path, tmp_path: Path
) -> None:
    train = TrainConfig(
        max_steps=40,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=2,
        batch_size=8,
        eval_every=20,
        eval_iters=1,
    )
    summary = train_reward_model(
        chat_run, prefs_file, tmp_path / "rm", train, show_progress=False
    ).summary
    assert summary["heldout_accuracy"] == 1.0
    assert summary["length_baseline_accuracy"] == 0.0  # chosen is always the shorter reply
    assert summary["shorter_baseline_accuracy"] == 1.0
    assert summary["pairs_chosen_not_shorter"] == 0  # so no accuracy beyond length to report
    assert summary["accuracy_chosen_not_shorter"] is None
    model, tok = load_reward_model(tmp_path / "rm")
    rows = encode_pairs(tok, read_prefs(prefs_file), 256)
    scores = score_rows(model, [c for c, _ in rows] + [r for _, r in rows], tok.pad_id)
    # normalised on the training pairs' responses (the validation pairs are a few of these
    # 40, so the whole file is close to, not exactly at, mean 0 and std 1)
    assert abs(scores.mean().item()) < 0.05
    assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=0.05)
    assert summary["std"] > 0


@pytest.mark.parametrize(
    ("row", "msg"),
    [
        ('{"prompt": "q", "chosen": "a", "rejected": "a"}', "chosen and rejected are identical"),
        ('{"prompt": "q", "chosen": " ", "rejected": "a"}', "empty response"),
        ('{"prompt": "q", "chosen": "a"}', "needs string fields"),
        ("{oops", "malformed JSON"),
    ],
)
def test_bad_preference_rows(row: str, msg: str, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n' + row + "\n")
    with pytest.raises(PrefsError, match=rf"p\.jsonl:2: {msg}"):
        read_prefs(path)
