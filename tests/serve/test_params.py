"""Request -> engine inputs (`serve/params.py`) without a server, and `ServeConfig.validate`."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("fastapi")

from lmlab.infer import Engine, SamplingParams
from lmlab.serve import schemas as S
from lmlab.serve.app import create_app
from lmlab.serve.config import ServeConfig
from lmlab.serve.errors import APIError
from lmlab.serve.params import chat_request, completion_request

LIMIT = 32


def chat(engine: Engine, **body: Any) -> Any:
    req = S.ChatCompletionRequest.model_validate({"model": "tiny", **body})
    return chat_request(req, engine, "tiny", LIMIT)


def complete(engine: Engine, **body: Any) -> Any:
    req = S.CompletionRequest.model_validate({"model": "tiny", **body})
    return completion_request(req, engine, "tiny", LIMIT)


def test_chat_request_maps_every_field(reference: Engine) -> None:
    msgs = [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]
    prep = chat(
        reference,
        messages=msgs,
        max_completion_tokens=5,
        max_tokens=9,  # max_completion_tokens wins
        temperature=0.5,
        top_k=3,
        min_p=0.1,
        stop="x",
        seed=4,
        logprobs=True,
        n=2,
    )
    want_ids = reference.tokenizer.encode_chat(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        add_generation_prompt=True,
    )[0]
    assert prep.prompts == [want_ids]
    assert prep.params == SamplingParams(
        max_new_tokens=5,
        temperature=0.5,
        top_k=3,
        top_p=1.0,
        min_p=0.1,
        n=2,
        stop=["x"],
        seed=4,
        logprobs=True,
    )
    assert (prep.strategy, prep.question, prep.max_tokens) == ("direct", "hi", 5)


def test_default_max_tokens_is_the_limit_or_the_room_left(reference: Engine) -> None:
    short = complete(reference, prompt="ab")
    assert short.prompts == [reference.encode_prompt("ab")]
    assert short.params.max_new_tokens == LIMIT and short.params.temperature == 1.0
    assert short.max_tokens is None
    assert reference.max_len - 5 > LIMIT
    long = complete(reference, prompt=[1] * (reference.max_len - 5))  # 5 tokens of room left
    assert long.params.max_new_tokens == 5


def test_strategy_from_suffix_and_body(reference: Engine) -> None:
    q = [{"role": "assistant", "content": "x"}, {"role": "user", "content": "What is 2+3?"}]
    prep = chat(reference, model="tiny:sc@3", messages=q)
    assert (prep.strategy, prep.reasoning.k, prep.question) == ("sc", 3, "What is 2+3?")
    # A strategy reads only the last user message.
    only = [{"role": "user", "content": "What is 2+3?"}]
    assert prep.prompts == [reference.tokenizer.encode_chat(only, add_generation_prompt=True)[0]]
    body = chat(reference, model="tiny:sc@3", messages=q, reasoning={"strategy": "cot"})
    assert (body.strategy, body.reasoning.k) == ("cot", 3)


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"prompt": "x", "n": 17}, "n", "invalid_value"),
        ({"prompt": "x", "stop": ["a", ""]}, "stop", "invalid_value"),
        ({"prompt": "x", "stop": ["a"] * 17}, "stop", "invalid_value"),
        ({"prompt": "x", "max_tokens": LIMIT + 1}, "max_tokens", "invalid_value"),
        ({"prompt": "x", "presence_penalty": 1}, "presence_penalty", "unsupported"),
        ({"prompt": "x", "frequency_penalty": -1}, "frequency_penalty", "unsupported"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"prompt": "x", "echo": True, "model": "tiny:cot"}, "echo", "unsupported"),
        ({"prompt": "x", "suffix": "y"}, "suffix", "unsupported"),
        ({"prompt": "x", "best_of": 3}, "best_of", "unsupported"),
        ({"prompt": "x", "n": 2, "best_of": 3}, "best_of", "unsupported"),
        ({"prompt": "x", "logit_bias": {"5": 1.0}}, "logit_bias", "unsupported"),
        ({"prompt": [0, 10**9]}, "prompt", "invalid_value"),
        ({"prompt": ["x"] * 65}, "prompt", "invalid_value"),
        ({"prompt": "x" * 200}, "prompt", "context_length_exceeded"),
        ({"prompt": ["x", "y"], "model": "tiny:cot"}, "prompt", "invalid_value"),
    ],
)
def test_bad_fields_are_named(
    reference: Engine, body: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(APIError) as err:
        complete(reference, **body)
    assert (err.value.status, err.value.param, err.value.code) == (400, param, code)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"max_queue": -1}, "--max-queue must be >= 0, got -1"),
        ({"max_tokens": 0}, r"--max-tokens must be in \[1, 131072\], got 0"),
        ({"max_tokens": 10**9}, r"--max-tokens must be in \[1, 131072\], got 1000000000"),
        ({"timeout": 0.0}, "--timeout must be > 0, got 0.0"),
        ({"timeout": float("nan")}, "--timeout must be a finite number, got nan"),
        ({"timeout": float("inf")}, "--timeout must be a finite number, got inf"),
    ],
)
def test_serve_config_validates_itself(reference: Engine, kw: dict[str, Any], message: str) -> None:
    ServeConfig().validate()
    with pytest.raises(ValueError) as err:
        ServeConfig(**kw).validate()
    assert re.fullmatch(message, str(err.value))
    with pytest.raises(ValueError, match=message):
        create_app(reference, ServeConfig(**kw))


@pytest.mark.parametrize(
    "body, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "response_format"),
        ({"logit_bias": {"5": -100}}, "logit_bias"),
        ({"audio": {"voice": "x", "format": "mp3"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"store": True}, "store"),
    ],
)
def test_unsupported_chat_fields_are_named(
    reference: Engine, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(APIError) as err:
        chat(reference, messages=[{"role": "user", "content": "hi"}], **body)
    assert (err.value.status, err.value.param, err.value.code) == (400, param, "unsupported")
    assert err.value.message.startswith(f"{param}: ")


def test_neutral_values_of_unsupported_fields_are_accepted(reference: Engine) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    plain = chat(reference, messages=msgs)
    neutral = chat(
        reference,
        messages=msgs,
        tools=[],
        tool_choice="none",
        functions=[],
        function_call="none",
        response_format={"type": "text"},
        logit_bias={},
        modalities=["text"],
        store=False,
    )
    assert neutral.params == plain.params and neutral.prompts == plain.prompts
    assert complete(reference, prompt="x", n=2, best_of=2).params.n == 2
    assert (
        complete(reference, prompt="x", suffix="").params == complete(reference, prompt="x").params
    )


def test_logprobs_echo_and_max_tokens_0_map_to_the_engine(reference: Engine) -> None:
    msgs = [{"role": "user", "content": "hi"}]
    p = chat(reference, messages=msgs, logprobs=True, top_logprobs=3).params
    assert (p.logprobs, p.top_logprobs, p.prompt_logprobs) == (True, 3, False)
    with pytest.raises(APIError) as err:  # OpenAI: top_logprobs needs logprobs
        chat(reference, messages=msgs, top_logprobs=3)
    assert err.value.param == "top_logprobs"
    p = complete(reference, prompt="x", logprobs=2).params
    assert (p.logprobs, p.top_logprobs, p.prompt_logprobs) == (True, 2, False)
    p = complete(reference, prompt="x", logprobs=0).params
    assert (p.logprobs, p.top_logprobs) == (True, 0)
    prep = complete(reference, prompt=["ab", "c"], echo=True, max_tokens=0, logprobs=1)
    assert (prep.params.max_new_tokens, prep.params.prompt_logprobs) == (0, True)
    assert prep.echo == ["ab", "c"]
    ids = complete(reference, prompt=[[1, 7, 8]], echo=True, max_tokens=0)
    assert ids.echo == [reference.tokenizer.decode([1, 7, 8])]
    # Scoring a prompt that fills the context is allowed: nothing is generated after it.
    full = [1] * reference.max_len
    assert complete(reference, prompt=full, echo=True, max_tokens=0).params.max_new_tokens == 0
    with pytest.raises(APIError) as err:
        complete(reference, prompt=full, echo=True, max_tokens=1)
    assert err.value.code == "context_length_exceeded"
