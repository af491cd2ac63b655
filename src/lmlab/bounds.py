"""The limits of every size-like input, in one place.

How many samples, engine slots, problems, prompts and bytes one call may ask for. The command
line, the server and the library's own validation (the engine, the reasoning strategies) check
against these constants with `check_count`, so that `lmlab reason --strategy sc@100000` and a
server request with `"k": 100000` get the same one-line error instead of an engine sized to
100,000 slots (which was OOM-killed at 23 GB).

The limits are far above anything a run of this lab needs and far below what would exhaust a
machine: a bad value fails at once, a large legitimate one still runs.
"""

from __future__ import annotations

import math

MAX_SAMPLES = 64
"""Samples drawn for one question or request at once: self-consistency chains (`k`), tree of
thoughts' thoughts per state, states kept per depth (`breadth`) and evaluator replies, few-shot
exemplars, responses per preference prompt, best-of-n's largest n. The server's `reasoning.k`."""

MAX_SLOTS = 1024
"""Engine slots (`max_batch`: sequences decoded together), hence also samples per prompt (`n`).
Each slot holds a whole sequence's keys and values, so the KV cache grows with this."""

MAX_DECODE_STEPS = 64
"""Greedy decode steps one compiled engine call unrolls (`--decode-steps`)."""

MAX_PROBLEMS = 1_000_000
"""Problems, prompts or chats one command generates (`eval --n`, `reason --n`,
`prefs --n-prompts`, `world sample --n`, `label --n`, `sft --n-world`, RL prompts per step):
all are built in memory up front."""

MAX_BATCH_SIZE = 65_536
"""Sequences in one batch of training or scoring (`--train.batch-size`, `moe-stats
--batch-size`)."""

MAX_BATCHES = 100_000
"""Batches one pass may take: micro-batches accumulated per step, batches of one evaluation
(`--train.grad-accum`, `--train.eval-iters`, `moe-stats --batches`)."""

MAX_REFITS = 10_000
"""Refits of one scaling-law fit (`--bootstrap`, `--starts`)."""

MAX_WORKERS = 256
"""Processes or threads one command starts (`scaling run --workers`, `--threads`)."""

MAX_VOCAB = 1 << 20
"""Tokens in a vocabulary (the largest public models use about 256k)."""

MAX_WIDTH = 1 << 16
"""Model widths: d_model, d_ff, d_expert."""

MAX_LAYERS = 1024
"""Transformer blocks, attention heads, experts."""

MAX_NEW_TOKENS = 131072
"""New tokens one sample may ask for: a whole context of the longest model this lab builds
(`config.MAX_CONTEXT_LENGTH`); a model's own context is checked where it is known."""

MAX_PROMPTS = 64
"""Prompts in one completions request of the server."""
MAX_STOP_STRINGS = 16
"""Stop strings per request: more than OpenAI's 4, since lm-eval adds the end-of-text string
to every task's own stop list."""

MAX_DEPTH = 1024
"""Lines of one tree-of-thoughts solution (`max_depth`)."""

MAX_REQUEST_BYTES = 4 << 20
"""Bytes of one HTTP request body (4 MiB; more is a 413 before the body is read). The largest
request a model of this lab can use, 64 prompts of token ids filling a 4,096-token context, is
under 2 MiB of JSON."""

MAX_PORT = 65535
"""The highest TCP port."""


class BoundsError(ValueError):
    """A size-like input outside its limits (shown to the user as one line)."""


def check_count(name: str, value: object, high: int, low: int = 1) -> int:
    """`value` if it is an integer in [low, high], else a one-line BoundsError naming `name`
    (a flag such as `--n` or a setting such as `k`)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise BoundsError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    if not low <= value <= high:
        raise BoundsError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_number(
    name: str, value: object, low: float | None = None, high: float | None = None
) -> float:
    """`value` if it is a finite number in [low, high] (either end open when None), else a
    one-line BoundsError naming `name`. NaN is never a setting: it fails every comparison, so
    a check such as `x < 0` lets it through silently."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise BoundsError(f"{name} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        raise BoundsError(f"{name} must be in [{lo}, {hi}], got {value:g}")
    return float(value)
