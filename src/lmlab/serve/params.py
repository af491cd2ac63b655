"""Request -> engine inputs: the strategy a model name asks for, the prompt token ids and the
`SamplingParams` of a chat or completions request, or a 400 naming the request field at fault.

OpenAI's fields map onto the engine's: `max_tokens` (chat: `max_completion_tokens` first) is
`max_new_tokens`, its default the server's limit or the room left in the context, whichever is
smaller; `temperature` and `top_p` default to 1; `stop` is up to 4 strings; `n` samples share a
prefill and need as many engine slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmlab.bounds import MAX_PROMPTS, MAX_SAMPLES
from lmlab.data.tokenizer import Message
from lmlab.infer.engine import Engine, GenerationError, SamplingParams
from lmlab.reason.strategies import STRATEGIES as REASON_STRATEGIES
from lmlab.serve import schemas as S
from lmlab.serve.errors import APIError
from lmlab.serve.limits import check_text

STRATEGIES = ["direct", *(s for s in REASON_STRATEGIES if s != "direct")]
"""`direct` (the model's own reply) and the strategies of `lmlab.reason`."""

REQUEST_FIELD = {"max_new_tokens": "max_tokens"}
"""The request field of a `SamplingParams` field, where the names differ."""


@dataclass
class Prepared:
    """A validated request, ready for the engine (`direct`) or a reasoning strategy."""

    prompts: list[list[int]]
    params: SamplingParams
    strategy: str
    reasoning: S.ReasoningOptions
    question: str | None
    """The text a strategy answers (chat: the last user message; completions: the prompt)."""
    max_tokens: int | None
    """`max_tokens` as the request gave it (a strategy's `max_new_tokens`; None: its own)."""


def strategy_of(
    model: str, options: S.ReasoningOptions | None, name: str
) -> tuple[str, S.ReasoningOptions]:
    """The strategy a request asks for: its `reasoning` field over its model suffix."""
    if model == name:
        suffix = ""
    elif model.startswith(name + ":"):
        suffix = model[len(name) + 1 :]
    else:
        raise APIError(
            404,
            f"model {model!r} does not exist; this server serves {name!r} "
            f"(optionally {name}:STRATEGY[@K])",
            param="model",
            code="model_not_found",
        )
    base, _, count = suffix.partition("@")
    opts = options or S.ReasoningOptions()
    fields = opts.model_fields_set
    if base and "strategy" not in fields:
        opts = opts.model_copy(update={"strategy": base})
    if count and "k" not in fields:
        if not count.isdigit() or not 1 <= int(count) <= MAX_SAMPLES:
            raise APIError(
                400,
                f"model suffix {suffix!r}: the number after @ must be an integer in "
                f"[1, {MAX_SAMPLES}]",
                param="model",
                code="invalid_value",
            )
        opts = opts.model_copy(update={"k": int(count)})
    if opts.strategy not in STRATEGIES:
        raise APIError(
            400,
            f"strategy {opts.strategy!r} not available; this server has {', '.join(STRATEGIES)}",
            param="reasoning.strategy",
            code="strategy_not_available",
        )
    return opts.strategy, opts


def chat_request(
    body: S.ChatCompletionRequest, engine: Engine, name: str, max_tokens: int
) -> Prepared:
    """A chat request as the engine's input: the conversation in the chat template (a strategy
    reads only the last user message)."""
    strategy, opts = strategy_of(body.model, body.reasoning, name)
    if body.top_logprobs:
        raise _unsupported(
            "top_logprobs > 0 is not supported (logprobs=true returns the chosen tokens' "
            "log-probabilities)",
            "top_logprobs",
        )
    messages: list[Message] = []
    for m in body.messages:
        content = (
            m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        )
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
    if strategy != "direct":
        if not (question or "").strip():
            raise _invalid(
                f"strategy {strategy!r} answers the last user message; the conversation has none",
                "messages",
            )
        messages = [{"role": "user", "content": question or ""}]  # all a strategy reads
    check_text([m["content"] for m in messages], engine, "messages")  # before tokenizing
    tok = engine.tokenizer
    ids = _encode(lambda: tok.encode_chat(messages, add_generation_prompt=True)[0], "messages")
    asked = body.max_completion_tokens or body.max_tokens
    params = sampling_params(
        body, asked, [len(ids)], "messages", bool(body.logprobs), engine, max_tokens
    )
    return Prepared([ids], params, strategy, opts, question, asked)


def completion_request(
    body: S.CompletionRequest, engine: Engine, name: str, max_tokens: int
) -> Prepared:
    """A completions request as the engine's input: each prompt (text or token ids) as ids."""
    strategy, opts = strategy_of(body.model, body.reasoning, name)
    if body.echo:
        raise _unsupported("echo is not supported", "echo")
    if body.logprobs:
        raise _unsupported(
            "logprobs > 0 (top alternatives) is not supported; logprobs=0 returns the chosen "
            "tokens' log-probabilities",
            "logprobs",
        )
    raw = body.prompt
    items: list[Any] = (
        [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
    )
    if not items:
        raise _invalid("prompt is empty; give a string, strings or token ids", "prompt")
    if len(items) > MAX_PROMPTS:
        raise _invalid(f"at most {MAX_PROMPTS} prompts per request, got {len(items)}", "prompt")
    if strategy != "direct" and (
        len(items) != 1 or not isinstance(items[0], str) or not items[0].strip()
    ):
        raise _invalid(f"strategy {strategy!r} answers one text prompt", "prompt")
    check_text([p for p in items if isinstance(p, str)], engine, "prompt")  # before tokenizing
    prompts = [_encode(lambda p=p: engine.encode_prompt(p), "prompt") for p in items]
    lens = [len(p) for p in prompts]
    params = sampling_params(
        body, body.max_tokens, lens, "prompt", body.logprobs is not None, engine, max_tokens
    )
    question = items[0] if isinstance(items[0], str) else None
    return Prepared(prompts, params, strategy, opts, question, body.max_tokens)


def sampling_params(
    body: S._SamplingRequest,
    max_tokens: int | None,
    lens: list[int],
    param: str,
    logprobs: bool,
    engine: Engine,
    limit: int,
) -> SamplingParams:
    """The sampling parameters of a request whose prompts have `lens` tokens (`param` names the
    prompt field); `limit` is the server's most new tokens per request."""
    if body.presence_penalty or body.frequency_penalty:
        raise _unsupported(
            "presence_penalty and frequency_penalty are not supported; leave them at 0",
            "presence_penalty",
        )
    if max_tokens is not None and max_tokens > limit:
        raise _invalid(
            f"max_tokens={max_tokens} exceeds this server's limit of {limit}", "max_tokens"
        )
    context, longest = engine.max_len, max(lens)
    if longest >= context:
        raise _too_long(
            f"the prompt ({longest} tokens) fills the model's context length of {context} "
            "tokens; shorten it",
            param,
        )
    new = max_tokens if max_tokens is not None else min(limit, context - longest)
    if longest + new > context:
        raise _too_long(
            f"the prompt ({longest} tokens) + max_tokens ({new}) exceeds the context length of "
            f"{context} tokens; shorten the prompt or lower max_tokens",
            param,
        )
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    if stop is not None and len(stop) > 4:
        raise _invalid(f"stop takes at most 4 strings, got {len(stop)}", "stop")
    params = SamplingParams(
        max_new_tokens=new,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=body.top_k,
        min_p=body.min_p or 0.0,
        n=body.n or 1,
        stop=stop or None,
        seed=body.seed,
        logprobs=logprobs,
        ignore_eos=body.ignore_eos,
    )
    try:
        params.validate(engine.cfg.vocab_size, engine.max_batch)
    except GenerationError as e:
        field = REQUEST_FIELD.get(e.field, e.field) if e.field else None
        raise _invalid(str(e), field) from None
    return params


def _encode(fn: Callable[[], list[int]], param: str) -> list[int]:
    try:
        return fn()
    except GenerationError as e:
        raise _invalid(str(e), param) from None
    except Exception as e:  # the tokenizer rejects text it cannot encode (lone surrogates)
        raise _invalid(f"cannot tokenize {param}: {e}", param) from None


def _invalid(message: str, param: str | None) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def _unsupported(message: str, param: str) -> APIError:
    return APIError(400, message, param=param, code="unsupported")


def _too_long(message: str, param: str) -> APIError:
    return APIError(400, message, param=param, code="context_length_exceeded")
