"""Evaluation: world task suites through the engine, and their metrics."""

from lmlab.eval.harness import evaluate, print_table
from lmlab.eval.metrics import (
    char_accuracy,
    edit_distance,
    exact_match,
    gold_logprobs,
    normalized_edit_distance,
)

__all__ = [
    "char_accuracy",
    "edit_distance",
    "evaluate",
    "exact_match",
    "gold_logprobs",
    "normalized_edit_distance",
    "print_table",
]
