"""Eval metrics on hand-made predictions."""

from __future__ import annotations

import math

import pytest
import torch

from lmlab.eval.metrics import (
    char_accuracy,
    edit_distance,
    exact_match,
    gold_logprobs,
    normalized_edit_distance,
)
from tests.conftest import tiny_model_config


def test_exact_match() -> None:
    assert exact_match("936", "936") == 1.0
    assert exact_match("93", "936") == 0.0


@pytest.mark.parametrize(
    ("pred", "gold", "right", "want"),
    [
        ("936", "936", True, 1.0),
        ("946", "936", True, 2 / 3),
        ("36", "936", True, 2 / 3),  # units and tens right, hundreds missing
        ("36", "936", False, 0.0),  # left-aligned: nothing lines up
        ("1936", "936", True, 3 / 4),
        ("abcd", "abxd", False, 3 / 4),
        ("", "", False, 1.0),
        ("", "ab", False, 0.0),
    ],
)
def test_char_accuracy(pred: str, gold: str, right: bool, want: float) -> None:
    assert char_accuracy(pred, gold, right_align=right) == pytest.approx(want)


def test_edit_distance() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert edit_distance("abc", "abc") == 0
    assert normalized_edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert normalized_edit_distance("", "") == 0.0
    assert normalized_edit_distance("abc", "xyz") == 1.0


class _Bigram(torch.nn.Module):
    """A 'model' whose next-token distribution depends only on the current token."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table)
        self.cfg = tiny_model_config(vocab_size=table.shape[0], context_length=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[x]


def test_gold_logprobs_by_hand() -> None:
    torch.manual_seed(0)
    table = torch.randn(5, 5)
    logp = table.log_softmax(-1)
    model = _Bigram(table)
    prompts, golds = [[1, 2], [3], [0, 1, 2, 3, 4, 0]], [[4, 0], [3, 3, 1], [2, 2, 2]]
    got = gold_logprobs(model, prompts, golds, batch_size=2)
    assert got[0] == pytest.approx(float(logp[2, 4] + logp[4, 0]), abs=1e-5)
    assert got[1] == pytest.approx(float(logp[3, 3] + logp[3, 3] + logp[3, 1]), abs=1e-5)
    assert got[2] is None  # 9 tokens do not fit the context of 8
    assert all(v is None or not math.isnan(v) for v in got)
