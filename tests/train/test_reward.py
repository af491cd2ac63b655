"""Tests for lmlab.train.reward."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmlab.config import TrainConfig
from lmlab.data.prefs import PrefsError, read_prefs
from lmlab.model.load import load_reward_model
from lmlab.model.scoring import score_rows
from lmlab.train.reward import bradley_terry, encode_pairs, train_reward_model
from tests.conftest import TRL_PREFERENCE_FORMATS, trl_preference_row


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
        ('{"prompt": "q", "chosen": "a"}', "needs fields chosen and rejected"),
        ("{oops", "malformed JSON"),
    ],
)
def test_bad_preference_rows(row: str, msg: str, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n' + row + "\n")
    with pytest.raises(PrefsError, match=rf"p\.jsonl:2: {msg}"):
        read_prefs(path)


@pytest.mark.parametrize("fmt", TRL_PREFERENCE_FORMATS)
def test_reward_model_trains_a_step_on_each_trl_format(
    fmt: str, chat_run: Path, tmp_path: Path
) -> None:
    data = tmp_path / "prefs.jsonl"
    data.write_text("".join(json.dumps(trl_preference_row(fmt, i)) + "\n" for i in range(6)))
    train = TrainConfig(max_steps=1, batch_size=2, eval_every=1, eval_iters=1, log_every=1)
    summary = train_reward_model(
        chat_run, data, tmp_path / "rm", train, show_progress=False
    ).summary
    assert summary["train_pairs"] + summary["val_pairs"] == 6 and math.isfinite(summary["std"])
    _, tok = load_reward_model(tmp_path / "rm")
    # every pair is scored at its reply's <|end|>: the chat prompt, the reply, then <|end|>
    rows = encode_pairs(tok, read_prefs(data), 256)
    assert len(rows) == 6
    assert all(c[-1] == r[-1] == tok.end_id for c, r in rows)
