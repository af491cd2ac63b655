"""Request -> engine inputs: the strategy a model name asks for, the prompt token ids and the
`SamplingParams` of a chat or completions request, or a 400 naming the request field at fault.

OpenAI's fields map onto the engine's: `max_tokens` (chat: `max_completion_tokens` first) is
`max_new_tokens`, its default the server's limit or the room left in the context, whichever is
smaller; `temperature` and `top_p` default to 1; `stop` is up to 4 strings; `n` samples share a
prefill and need as many engine slots. Log-probabilities: chat's `logprobs` / `top_logprobs`
and completions' integer `logprobs` (alternatives) are the engine's `logprobs` /
`top_logprobs`; completions' `echo` scores the prompt in its prefill (`prompt_logprobs`), and
with `max_tokens: 0` nothing is generated (scoring a prompt, as lm-eval's log-likelihood
requests do). OpenAI fields the server does not implement are 400s (`serve/unsupported.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmlab.bounds import MAX_PROMPTS, MAX_SAMPLES, MAX_STOP_STRINGS
from lmlab.data.tokenizer import Message
from lmlab.infer.engine import Engine, GenerationError, SamplingParams
from lmlab.reason.strategies import STRATEGIES as REASON_STRATEGIES
from lmlab.serve import schemas as S
from lmlab.serve.errors import APIError
from lmlab.serve.limits import check_text
from lmlab.serve.unsupported import check_chat, check_completion

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
    echo: list[str] | None = None
    """Completions with `echo`: each prompt's text, which the answer repeats before its own."""


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
    check_chat(body)
    if body.top_logprobs and not body.logprobs:
        raise _invalid("top_logprobs needs logprobs: true", "top_logprobs")
    messages = chat_messages(body.messages)
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
    ids = encode(lambda: tok.encode_chat(messages, add_generation_prompt=True)[0], "messages")
    asked = body.max_completion_tokens or body.max_tokens
    params = sampling_params(
        body,
        asked,
        [len(ids)],
        "messages",
        engine,
        max_tokens,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
    )
    return Prepared([ids], params, strategy, opts, question, asked)


def chat_messages(messages: list[S.ChatMessage]) -> list[Message]:
    """A request's messages as the chat template reads them (text parts joined; `developer`
    is OpenAI's newer name for `system`)."""
    out: list[Message] = []
    for m in messages:
        content = (
            m.content if isinstance(m.content, str) else "".join(p.text for p in m.content or [])
        )
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


def completion_request(
    body: S.CompletionRequest, engine: Engine, name: str, max_tokens: int
) -> Prepared:
    """A completions request as the engine's input: each prompt (text or token ids) as ids."""
    strategy, opts = strategy_of(body.model, body.reasoning, name)
    check_completion(body)
    if body.max_tokens == 0 and not body.echo:
        raise _invalid(
            "max_tokens=0 generates nothing; it is for scoring a prompt with echo: true",
            "max_tokens",
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
    if strategy != "direct" and body.echo:
        raise _unsupported(f"echo does not apply to strategy {strategy!r}", "echo")
    check_text([p for p in items if isinstance(p, str)], engine, "prompt")  # before tokenizing
    prompts = [encode(lambda p=p: engine.encode_prompt(p), "prompt") for p in items]
    lens = [len(p) for p in prompts]
    params = sampling_params(
        body,
        body.max_tokens,
        lens,
        "prompt",
        engine,
        max_tokens,
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
        prompt_logprobs=bool(body.echo),
    )
    echo = None
    if body.echo:
        tok = engine.tokenizer
        echo = [
            p if isinstance(p, str) else tok.decode(ids)
            for p, ids in zip(items, prompts, strict=True)
        ]
    question = items[0] if isinstance(items[0], str) else None
    return Prepared(prompts, params, strategy, opts, question, body.max_tokens, echo)


def sampling_params(
    body: S._SamplingRequest,
    max_tokens: int | None,
    lens: list[int],
    param: str,
    engine: Engine,
    limit: int,
    logprobs: bool = False,
    top_logprobs: int = 0,
    prompt_logprobs: bool = False,
) -> SamplingParams:
    """The sampling parameters of a request whose prompts have `lens` tokens (`param` names the
    prompt field); `limit` is the server's most new tokens per request."""
    for penalty in ("presence_penalty", "frequency_penalty"):
        if getattr(body, penalty):
            raise _unsupported(f"{penalty} is not supported; leave it at 0", penalty)
    if max_tokens is not None and max_tokens > limit:
        raise _invalid(
            f"max_tokens={max_tokens} exceeds this server's limit of {limit}", "max_tokens"
        )
    context, longest = engine.max_len, max(lens)
    if longest > context or (longest == context and max_tokens != 0):
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
    if stop is not None and len(stop) > MAX_STOP_STRINGS:
        raise _invalid(f"stop takes at most {MAX_STOP_STRINGS} strings, got {len(stop)}", "stop")
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
        top_logprobs=top_logprobs,
        prompt_logprobs=prompt_logprobs,
        ignore_eos=body.ignore_eos,
    )
    try:
        params.validate(engine.cfg.vocab_size, engine.max_batch)
    except GenerationError as e:
        field = REQUEST_FIELD.get(e.field, e.field) if e.field else None
        raise _invalid(str(e), field) from None
    return params


def encode(fn: Callable[[], list[int]], param: str) -> list[int]:
    """`fn()`'s token ids, or a 400 naming `param` if the text cannot be tokenized."""
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
