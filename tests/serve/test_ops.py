"""The operable side of the server: `/metrics` scraped and parsed as Prometheus text, `/tokenize`,
`/detokenize`, `/tokenizer_info`, `/version`, and unsupported OpenAI fields refused through the
official client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
pytest.importorskip("prometheus_client")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from lmlab.infer import Engine  # noqa: E402
from lmlab.serve.routes.ops import lmlab_version  # noqa: E402
from tests.serve.conftest import live_server, make_server  # noqa: E402
from tests.serve.test_app import assert_error, client  # noqa: E402


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    r = httpx.get(url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def test_metrics_count_requests_tokens_and_slots(tiny_run: Path) -> None:
    app, _ = make_server(tiny_run, max_batch=3, max_queue=5, max_tokens=16)
    with live_server(app) as url:
        c = client(url)
        before = scrape(url)
        assert before[("lmlab_slots", ())] == 3
        assert before[("lmlab_requests_pending_limit", ())] == 3 + 5
        assert before[("lmlab_generation_tokens_total", ())] == 0
        r1 = c.completions.create(model="tiny", prompt="def f", max_tokens=7, temperature=0)
        r2 = c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=False
        )
        streamed = list(c.completions.create(model="tiny", prompt="x", max_tokens=4, stream=True))
        assert streamed
        assert httpx.post(url + "/v1/completions", json={"model": "tiny"}).status_code == 400
        assert httpx.get(url + "/nowhere").status_code == 404
        assert httpx.get(url + "/v1/models/nope").status_code == 404
        m = scrape(url)

    def requests(endpoint: str, status: int) -> float:
        key = ("lmlab_requests_total", (("endpoint", endpoint), ("status", str(status))))
        return m.get(key, 0.0)

    assert requests("/v1/completions", 200) == 2  # one whole, one streamed
    assert requests("/v1/chat/completions", 200) == 1
    assert requests("/v1/completions", 400) == 1
    assert requests("unmatched", 404) == 1
    assert requests("/v1/models/{model}", 404) == 1  # labelled by route, not by the raw path
    assert requests("/metrics", 200) == 1  # the first scrape
    latency = ("lmlab_request_duration_seconds_count", (("endpoint", "/v1/completions"),))
    assert m[latency] == 3
    assert m[("lmlab_request_duration_seconds_sum", (("endpoint", "/v1/completions"),))] > 0
    # Tokens in and out: what the answers' usage says (the stream: 4 tokens or fewer).
    out = r1.usage.completion_tokens + r2.usage.completion_tokens
    generated = m[("lmlab_generation_tokens_total", ())]
    assert out < generated <= out + 4
    prompts = r1.usage.prompt_tokens + r2.usage.prompt_tokens + 2  # <|bos|> x
    assert m[("lmlab_prompt_tokens_total", ())] == prompts
    assert m[("lmlab_engine_steps_total", ())] >= 7
    assert m[("lmlab_slots_busy", ())] == 0 and m[("lmlab_requests_pending", ())] == 0
    assert m[("lmlab_queue_waiting", ())] == 0


def test_tokenize_and_detokenize(server: str, reference: Engine) -> None:
    tok = reference.tokenizer
    text = "def f(x): <|end|>"
    r = httpx.post(server + "/tokenize", json={"prompt": text, "return_token_strs": True}).json()
    assert r["tokens"] == reference.encode_prompt(text)  # as /v1/completions reads the text
    assert r["count"] == len(r["tokens"]) and r["max_model_len"] == reference.max_len
    # as AutoTokenizer(text) on an export: BOS first, a typed special token read as control
    assert r["token_strs"][0] == "<|bos|>" and r["tokens"][-1] == tok.end_id
    bare = httpx.post(server + "/tokenize", json={"prompt": text, "add_special_tokens": False})
    assert bare.json()["tokens"] == tok.encode(text) and tok.end_id not in bare.json()["tokens"]
    msgs = [{"role": "user", "content": "hi"}]
    chat = httpx.post(server + "/tokenize", json={"model": "tiny", "messages": msgs}).json()
    assert chat["tokens"] == tok.encode_chat(msgs, add_generation_prompt=True)[0]  # type: ignore[arg-type]
    back = httpx.post(server + "/detokenize", json={"tokens": bare.json()["tokens"]})
    assert back.json() == {"prompt": text}
    info = httpx.get(server + "/tokenizer_info").json()
    assert (info["bos_token"], info["eos_token"]) == ("<|bos|>", "<|end|>")
    assert (info["bos_token_id"], info["eos_token_id"]) == (tok.bos_id, tok.end_id)
    assert "{%" in info["chat_template"]


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/tokenize", {}, "prompt"),
        ("/tokenize", {"prompt": "x", "messages": [{"role": "user", "content": "x"}]}, "prompt"),
        ("/tokenize", {"prompt": 3}, "prompt"),
        ("/detokenize", {"tokens": [1, 10**6]}, "tokens"),
        ("/detokenize", {"tokens": "x"}, "tokens"),
    ],
)
def test_tokenizer_endpoints_bad_input(server: str, path: str, body: Any, param: str) -> None:
    assert_error(httpx.post(server + path, json=body), 400, param=param)


def test_tokenizer_endpoints_check_the_model(server: str) -> None:
    r = httpx.post(server + "/tokenize", json={"model": "gpt-4", "prompt": "x"})
    assert_error(r, 404, code="model_not_found")


def test_version(server: str) -> None:
    v = httpx.get(server + "/version").json()
    assert v["version"] == lmlab_version() and v["torch"] and v["python"]


def test_api_key_covers_tokenizer_not_metrics(tiny_run: Path) -> None:
    app, _ = make_server(tiny_run, max_batch=1, api_key="k")
    with live_server(app) as url:
        assert_error(httpx.post(url + "/tokenize", json={"prompt": "x"}), 401)
        ok = httpx.post(
            url + "/tokenize", json={"prompt": "x"}, headers={"Authorization": "Bearer k"}
        )
        assert ok.status_code == 200
        assert httpx.get(url + "/metrics").status_code == 200
        assert httpx.get(url + "/version").status_code == 200


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logit_bias": {"7": 5}}, "logit_bias"),
        ({"reasoning_effort": "low"}, "reasoning_effort"),
    ],
)
def test_openai_client_gets_400_naming_unsupported_fields(
    server: str, extra: dict[str, Any], param: str
) -> None:
    c = client(server)
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2, **extra
        )
    assert e.value.status_code == 400
    err = e.value.body
    assert isinstance(err, dict) and (err["param"], err["code"]) == (param, "unsupported")


def test_openai_client_neutral_fields_are_accepted(server: str) -> None:
    r = client(server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        response_format={"type": "text"},
        tool_choice="none",
        logit_bias={},
    )
    assert r.choices[0].finish_reason in ("stop", "length")
