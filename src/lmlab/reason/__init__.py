"""Reasoning at inference: strategies layered over the one engine, and their comparison.

    from lmlab.reason import parse_strategy
    results = parse_strategy("sc@8", task="arith:4").run(engine, problems)

Each `Result` has the answer, the traces and the compute spent (tokens generated, prompt
tokens prefilled, FLOPs of both).
"""

from lmlab.reason.base import Compute, ReasonError, Result, extract, vote
from lmlab.reason.compare import compare, plot, print_rows, run_strategy
from lmlab.reason.strategies import STRATEGIES, get_strategy, parse_strategy

__all__ = [
    "STRATEGIES",
    "Compute",
    "ReasonError",
    "Result",
    "compare",
    "extract",
    "get_strategy",
    "parse_strategy",
    "plot",
    "print_rows",
    "run_strategy",
    "vote",
]
