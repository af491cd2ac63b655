"""OpenAI request fields this server does not implement: a request that sets one to anything
that would change the answer gets a 400 naming the field, never a 200 that silently ignored it.

A field's neutral values (absent, null, an empty list or map, `tool_choice: "none"`,
`response_format: {"type": "text"}`, `modalities: ["text"]`, `best_of` equal to `n`) are
accepted: they ask for nothing this server does not do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmlab.serve import schemas as S
from lmlab.serve.errors import APIError

TOOLS = "tool calling is not supported by this server"

Rule = tuple[str, Callable[[Any, Any], bool], str]
"""(field, does this value (of this request) ask for something unsupported?, why)."""


def _set(value: Any, _: Any) -> bool:
    return value is not None


def _nonempty(value: Any, _: Any) -> bool:
    return bool(value)


def _not_none_choice(value: Any, _: Any) -> bool:
    return value is not None and value != "none"


COMMON: list[Rule] = [
    ("logit_bias", _nonempty, "logit_bias is not supported; leave it empty"),
]

CHAT: list[Rule] = [
    ("tools", _nonempty, TOOLS),
    ("tool_choice", _not_none_choice, TOOLS + " (only tool_choice 'none')"),
    ("parallel_tool_calls", _set, TOOLS),
    ("functions", _nonempty, TOOLS),
    ("function_call", _not_none_choice, TOOLS + " (only function_call 'none')"),
    (
        "response_format",
        lambda v, _: v is not None and v.type != "text",
        "only response_format {'type': 'text'} is supported (JSON modes need constrained "
        "decoding, which this server does not do)",
    ),
    ("audio", _set, "audio output is not supported"),
    ("modalities", lambda v, _: v is not None and v != ["text"], "only modalities ['text']"),
    ("prediction", _set, "predicted outputs are not supported"),
    ("web_search_options", _set, "web search is not supported"),
    (
        "reasoning_effort",
        _set,
        "reasoning_effort is not supported; lmlab's reasoning strategies are chosen with "
        "'reasoning' or a model suffix (docs/serving.md)",
    ),
    ("store", lambda v, _: bool(v), "this server stores no completions (store: true)"),
]

COMPLETIONS: list[Rule] = [
    ("suffix", _nonempty, "suffix (insertion) is not supported"),
    (
        "best_of",
        lambda v, body: v is not None and v != (body.n or 1),
        "best_of other than n is not supported (n samples are returned, none discarded)",
    ),
]


def check_chat(body: S.ChatCompletionRequest) -> None:
    """400 naming the first unsupported field a chat request sets."""
    _check(body, COMMON + CHAT)


def check_completion(body: S.CompletionRequest) -> None:
    """400 naming the first unsupported field a completions request sets."""
    _check(body, COMMON + COMPLETIONS)


def _check(body: S._SamplingRequest, rules: list[Rule]) -> None:
    for field, unsupported, why in rules:
        if unsupported(getattr(body, field), body):
            raise APIError(400, f"{field}: {why}", param=field, code="unsupported")
