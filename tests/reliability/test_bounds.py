"""Every size-like input has one limit, in `lmlab.bounds`, and the command line, the server and
the library agree on it (issue 23, item 10: `lmlab reason --strategy sc@100000` sized the engine
to 100,000 slots and was OOM-killed; the server capped k at 64, the CLI did not)."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import pytest

from lmlab import bounds
from lmlab.bounds import (
    MAX_DECODE_STEPS,
    MAX_PROBLEMS,
    MAX_SAMPLES,
    MAX_SLOTS,
    BoundsError,
    check_count,
    check_number,
)
from lmlab.cli import main
from lmlab.config import MAX_CONTEXT_LENGTH
from lmlab.infer import Engine
from lmlab.infer.engine import GenerationError
from lmlab.model.load import load_run
from lmlab.reason.compare import widest_request
from lmlab.reason.strategies import STRATEGIES, get_strategy, parse_strategy
from tests.conftest import user_error

COUNTS = [
    # (strategy, setting): every count of samples a strategy asks the engine for at once
    ("sc", "k"),
    ("sc-weighted", "k"),
    ("adaptive", "k"),
    ("adaptive", "step"),
    ("adaptive", "breadth"),
    ("adaptive", "n_evaluate"),
    ("adaptive", "n_vote"),
    ("tot", "k"),
    ("tot", "breadth"),
    ("tot", "n_evaluate"),
    ("tot", "n_vote"),
    ("fewshot-cot", "shots"),
]


def test_check_count() -> None:
    assert check_count("--n", 5, 10) == 5
    assert check_count("--port", 0, 10, low=0) == 0
    for bad, message in (
        (0, r"--n must be in \[1, 10\], got 0"),
        (11, r"--n must be in \[1, 10\], got 11"),
        (True, r"--n must be an integer in \[1, 10\], got True"),
        (2.0, r"--n must be an integer in \[1, 10\], got 2.0"),
        ("3", r"--n must be an integer in \[1, 10\], got '3'"),
    ):
        with pytest.raises(BoundsError, match=message):
            check_count("--n", bad, 10)


def test_check_number() -> None:
    assert check_number("x", 0.5, 0, 1) == 0.5
    assert check_number("x", 3, low=0) == 3.0
    for bad in (math.nan, math.inf, -math.inf, "1", None, True):
        with pytest.raises(BoundsError, match="x must be a finite number"):
            check_number("x", bad)
    with pytest.raises(BoundsError, match=r"x must be in \[0, 1\], got 2"):
        check_number("x", 2.0, 0, 1)


def test_the_limits_agree_with_the_rest_of_the_lab() -> None:
    assert bounds.MAX_NEW_TOKENS == MAX_CONTEXT_LENGTH  # a whole context of the longest model
    assert MAX_SAMPLES <= MAX_SLOTS  # any one request's samples fit an engine at the limit
    serve = pytest.importorskip("lmlab.serve.schemas")
    k = serve.ReasoningOptions.model_json_schema()["properties"]["k"]["anyOf"][0]
    assert (k["minimum"], k["maximum"]) == (1, MAX_SAMPLES)


@pytest.mark.parametrize(("strategy", "setting"), COUNTS)
def test_every_strategy_count_is_bounded(strategy: str, setting: str) -> None:
    get_strategy(strategy, **{setting: MAX_SAMPLES})
    for bad in (0, MAX_SAMPLES + 1, 100_000):
        with pytest.raises(ValueError, match=rf"{setting} must be in \[1, {MAX_SAMPLES}\]"):
            get_strategy(strategy, **{setting: bad})


def test_counts_cover_every_integer_setting_that_sizes_an_engine_request() -> None:
    """A new count added to a strategy must be bounded too: every int setting of a strategy is
    either in COUNTS or one of the settings that are not counts of samples."""
    not_counts = {"max_new_tokens", "budget", "seed", "max_depth", "eval_tokens"}
    seen = set()
    for name, cls in STRATEGIES.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if int in (hints[f.name], *typing.get_args(hints[f.name])):
                seen.add(f.name)
                if f.name not in not_counts:
                    assert (name, f.name) in COUNTS, (name, f.name)
    assert {"k", "breadth", "shots", "seed"} <= seen  # the scan sees the strategies' ints


def test_tree_depth_and_token_settings_are_bounded() -> None:
    with pytest.raises(ValueError, match=r"max_depth must be in \[1, 1024\]"):
        get_strategy("tot", max_depth=10**9)
    with pytest.raises(ValueError, match=r"eval_tokens must be in \[1, 131072\]"):
        get_strategy("tot", eval_tokens=10**9)
    with pytest.raises(ValueError, match=r"max_new_tokens must be in \[1, 131072\]"):
        get_strategy("cot", max_new_tokens=10**9)
    for bad in ({"temperature": math.nan}, {"agree": math.nan}, {"direct_threshold": math.inf}):
        with pytest.raises(ValueError, match="must be"):
            get_strategy("adaptive", **bad)


def test_the_widest_engine_request_of_any_valid_strategy_is_bounded() -> None:
    specs = [f"{s}@{MAX_SAMPLES}" for s in ("sc", "sc-weighted", "tot", "adaptive")]
    settings = {"n_evaluate": MAX_SAMPLES, "n_vote": MAX_SAMPLES}
    assert widest_request(specs, settings) == MAX_SAMPLES
    with pytest.raises(ValueError, match=r"k must be in \[1, 64\]"):
        parse_strategy("sc@100000")


def test_the_engine_refuses_slots_beyond_the_limit_before_allocating(tiny_run: Path) -> None:
    model, tok, _ = load_run(tiny_run)
    for bad in (0, MAX_SLOTS + 1, 100_000):
        with pytest.raises(GenerationError, match=r"max_batch must be in \[1, 1024\]"):
            Engine(model, tok, max_batch=bad)
    with pytest.raises(GenerationError, match=r"decode_steps must be in \[1, 64\]"):
        Engine(model, tok, decode_steps=MAX_DECODE_STEPS + 1)


# --- the command line: one error line, before anything is loaded -----------------------------


MISSING = "no/such/run"  # the bound is checked before the run would be read


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["reason", MISSING, "--strategy", "sc@100000"], "k must be in [1, 64], got 100000"),
        (["reason", MISSING, "--strategy", "sc", "-k", "65"], "k must be in [1, 64], got 65"),
        (["reason", MISSING, "--strategy", "tot@65"], "breadth must be in [1, 64]"),
        (["reason", MISSING, "--strategy", "fewshot-cot@65"], "shots must be in [1, 64]"),
        (["reason", MISSING, "--batch-size", "0"], "--batch-size must be in [1, 1024], got 0"),
        (["reason", MISSING, "--batch-size", "100000"], "--batch-size must be in [1, 1024]"),
        (["reason", MISSING, "--n", str(MAX_PROBLEMS + 1)], "--n must be in [1, 1000000]"),
        (["eval", MISSING, "--max-new-tokens", "0"], "--max-new-tokens must be in [1, 131072]"),
        (["eval", MISSING, "--batch-size", "5000"], "--batch-size must be in [1, 1024]"),
        (["eval", MISSING, "--n", "0"], "--n must be in [1, 1000000], got 0"),
        (["prefs", MISSING, "--out", "p.jsonl", "--n-prompts", "0"], "--n-prompts must be in"),
        (["prefs", MISSING, "--out", "p.jsonl", "--k", "100"], "--k must be in [2, 64]"),
        (["generate", MISSING, "--n", "100000"], "--n must be in [1, 1024], got 100000"),
        (["sample", MISSING, "--n", "0"], "--n must be in [1, 1024], got 0"),
        (["sample", MISSING, "--max-new-tokens", "0"], "--max-new-tokens must be in [1,"),
        (["chat", MISSING, "--max-new-tokens", str(10**12)], "--max-new-tokens must be in"),
        (["world", "sample", "--n", "0"], "--n must be in [1, 1000000], got 0"),
        (["label", MISSING, "--out", "l.jsonl", "--n", str(10**12)], "--n must be in"),
        (["moe-stats", MISSING, "--batches", str(10**12)], "--batches must be in"),
        (["serve", MISSING, "--max-batch", "100000"], "--max-batch must be in [1, 1024]"),
        (["serve", MISSING, "--port", "70000"], "--port must be in [0, 65535], got 70000"),
        (["serve", MISSING, "--decode-steps", "1000"], "--decode-steps must be in [1, 64]"),
        (["scaling", "run", MISSING, "--workers", str(10**12)], "--workers must be in [1, 256]"),
        (["scaling", "fit", MISSING, "--starts", str(10**12)], "--starts must be in [1, 10000]"),
        (["scaling", "fit", MISSING, "--bootstrap", "100001"], "--bootstrap must be in [0, 10000]"),
        (["sft", MISSING, "--n-world", str(10**12)], "--n-world must be in [2, 1000000]"),
        (["sft", MISSING, "--train.batch-size", str(10**12)], "--train.batch-size must be in"),
        (["sft", MISSING, "--train.grad-accum", str(10**12)], "--train.grad-accum must be in"),
        (["grpo", MISSING, "--out", "g", "--k", "1000"], "--k must be in [2, 64]"),
        (["ppo", MISSING, "--prompts-per-iter", str(10**12)], "--prompts-per-iter must be in"),
        (["pretrain", "--model.vocab-size", str(10**12)], "--model.vocab-size must be in"),
        (["pretrain", "--model.d-model", str(10**12)], "--model.d-model must be in"),
        (["rlhf", "overopt", MISSING, "--out", "o", "--bon-max", "1000"], "--bon-max must be in"),
    ],
)
def test_the_command_line_refuses_sizes_beyond_the_limits(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert fragment in user_error(capsys, argv)


def test_the_cli_and_the_server_share_the_sample_limit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same k is refused by `lmlab reason` and by the server's request model."""
    schemas: Any = pytest.importorskip("lmlab.serve.schemas")
    pydantic = pytest.importorskip("pydantic")
    schemas.ReasoningOptions(strategy="sc", k=MAX_SAMPLES)
    with pytest.raises(pydantic.ValidationError):
        schemas.ReasoningOptions(strategy="sc", k=MAX_SAMPLES + 1)
    assert main(["reason", MISSING, "--strategy", f"sc@{MAX_SAMPLES + 1}"]) == 2
    assert f"[1, {MAX_SAMPLES}]" in capsys.readouterr().err
