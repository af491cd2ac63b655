"""Tests for lmlab.serve against a live uvicorn server on 127.0.0.1 (tiny random-weight run)."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from lmlab.infer import Engine, SamplingParams  # noqa: E402
from tests.serve.conftest import live_server, make_server  # noqa: E402

PROMPTS = ["def f", "x", "# line 3: the", "return x *", "fox", "def f12(x):\n", "quick", "7"]
CHATS = ["hi", "def f", "what is 2+2?", "the quick brown fox"]


def greedy(max_new_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, **kw)


def client(url: str, key: str = "x") -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def assert_error(r: Any, status: int, **expect: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    for k, v in expect.items():
        assert err[k] == v, err
    return err


# --- the official client gets the engine's own outputs ---------------------------------------


def test_openai_client_chat_matches_engine(server: str, reference: Engine) -> None:
    # The random tiny model's greedy reply to any chat is <|assistant|> repeated (empty text),
    # so replies are also compared sampled with a seed: a sample depends only on its seed.
    c = client(server)
    nonempty = 0
    for i, text in enumerate(CHATS):
        msgs = [{"role": "user", "content": text}]
        for params in (greedy(12), SamplingParams(max_new_tokens=12, temperature=1.0, seed=i)):
            want = reference.chat(msgs, params)  # type: ignore[arg-type]
            nonempty += bool(want.text)
            kw: dict[str, Any] = dict(
                model="tiny",
                messages=msgs,
                max_tokens=12,
                temperature=params.temperature,
                seed=params.seed,
            )
            r = c.chat.completions.create(**kw)
            assert r.object == "chat.completion"
            assert r.choices[0].message.content == want.text
            assert r.choices[0].finish_reason == want.finish_reason
            assert r.usage.prompt_tokens == want.prompt_tokens
            assert r.usage.completion_tokens == len(want.token_ids)
            chunks = list(c.chat.completions.create(**kw, stream=True))
            assert chunks[0].choices[0].delta.role == "assistant"
            assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == want.text
            assert chunks[-1].choices[0].finish_reason == want.finish_reason
    assert nonempty >= len(CHATS), "the tiny model wrote too little visible text to compare"


def test_openai_client_completions_match_engine(server: str, reference: Engine) -> None:
    c = client(server)
    for prompt in PROMPTS[:4]:
        want = reference.generate([prompt], greedy(16))[0][0]
        assert want.text
        r = c.completions.create(model="tiny", prompt=prompt, max_tokens=16, temperature=0)
        assert r.choices[0].text == want.text
        assert r.usage.completion_tokens == len(want.token_ids)
        pieces = [
            ch.choices[0].text
            for ch in c.completions.create(
                model="tiny", prompt=prompt, max_tokens=16, temperature=0, stream=True
            )
            if ch.choices
        ]
        assert len(pieces) > 2  # streamed token by token, not in one piece
        assert "".join(pieces) == want.text


def test_stop_seed_n_and_extra_fields(server: str, reference: Engine) -> None:
    c = client(server)
    base = reference.generate(["def f"], greedy(16))[0][0].text
    stop = base[3:5]
    want = reference.generate(["def f"], greedy(16, stop=[stop]))[0][0]
    r = c.completions.create(model="tiny", prompt="def f", max_tokens=16, temperature=0, stop=stop)
    assert (r.choices[0].text, r.choices[0].finish_reason) == (want.text, "stop")
    streamed = "".join(
        ch.choices[0].text
        for ch in c.completions.create(
            model="tiny", prompt="def f", max_tokens=16, temperature=0, stop=[stop], stream=True
        )
        if ch.choices
    )
    assert streamed == want.text
    # Sampling: a seed fixes the samples; n samples of one request; top_k via extra_body.
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=5, n=3, seed=7)
    want_n = [x.text for x in reference.generate(["x"], params)[0]]
    kw: dict[str, Any] = dict(model="tiny", prompt="x", max_tokens=10, n=3, seed=7)
    r = c.completions.create(**kw, extra_body={"top_k": 5})
    assert [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)] == want_n
    streamed_n = [""] * 3
    for ch in c.completions.create(**kw, extra_body={"top_k": 5}, stream=True):
        for choice in ch.choices:
            streamed_n[choice.index] += choice.text
    assert streamed_n == want_n
    # Several prompts in one request draw independent noise, numbered as Engine.generate does.
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=5, n=2, seed=7)
    want_pp = [[x.text for x in out] for out in reference.generate(["x", "x"], params)]
    r = c.completions.create(**{**kw, "prompt": ["x", "x"], "n": 2}, extra_body={"top_k": 5})
    got = [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)]
    assert [got[:2], got[2:]] == want_pp and got[:2] != got[2:]


def test_logprobs_are_the_engines(server: str, reference: Engine) -> None:
    msgs = [{"role": "user", "content": "def f"}]
    want = reference.chat(msgs, greedy(8, logprobs=True))  # type: ignore[arg-type]
    r = client(server).chat.completions.create(
        model="tiny", messages=msgs, max_tokens=8, temperature=0, logprobs=True
    )
    got = [t.logprob for t in r.choices[0].logprobs.content]
    n = len(want.token_ids) - (want.finish_reason == "stop")  # the stop token is not text
    assert got == pytest.approx(want.logprobs[:n], abs=1e-4)


# --- continuous batching under load ----------------------------------------------------------


def test_16_clients_x_10_requests(server: str, reference: Engine) -> None:
    lengths = [4, 9, 16]
    want = {(p, n): reference.generate([p], greedy(n))[0][0].text for p in PROMPTS for n in lengths}
    sampled = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3)
    chat_want = {
        m: reference.chat([{"role": "user", "content": m}], sampled).text  # type: ignore[list-item]
        for m in CHATS
    }
    assert all(chat_want.values())

    def one_client(ci: int) -> list[tuple[int, bool]]:
        out = []
        with httpx.Client(base_url=server, timeout=120) as h:
            for i in range(10):
                if (ci + i) % 3 == 2:
                    m = CHATS[(ci + i) % len(CHATS)]
                    r = h.post(
                        "/v1/chat/completions",
                        json={
                            "model": "tiny",
                            "messages": [{"role": "user", "content": m}],
                            "max_tokens": 8,
                            "temperature": 1.0,
                            "seed": 3,
                        },
                    )
                    ok = r.status_code == 200 and (
                        r.json()["choices"][0]["message"]["content"] == chat_want[m]
                    )
                    out.append((r.status_code, ok))
                    continue
                p, n = PROMPTS[(ci * 3 + i) % len(PROMPTS)], lengths[(ci + i) % 3]
                body = {"model": "tiny", "prompt": p, "max_tokens": n, "temperature": 0}
                if i % 2:
                    text = ""
                    with h.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                        for line in r.iter_lines():
                            if line.startswith("data: {"):
                                for ch in json.loads(line[6:])["choices"]:
                                    text += ch["text"]
                    out.append((r.status_code, text == want[p, n]))
                else:
                    r = h.post("/v1/completions", json=body)
                    ok = r.status_code == 200 and r.json()["choices"][0]["text"] == want[p, n]
                    out.append((r.status_code, ok))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [x for part in pool.map(one_client, range(16)) for x in part]
    assert len(results) == 160
    assert not [s for s, _ in results if s >= 500]
    assert all(s == 200 and ok for s, ok in results), results
    health = httpx.get(f"{server}/health").json()
    assert health["pending"] == 0 and health["running"] == 0


# --- bad requests: 4xx with OpenAI's error body ----------------------------------------------

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "path, body, status, expect",
    [
        (COMP, '{"model": "tiny", "prompt": ', 400, {"code": "invalid_json"}),
        (CHAT, "not json at all", 400, {"code": "invalid_json"}),
        (CHAT, {"model": "gpt-4", "messages": MSG}, 404, {"code": "model_not_found"}),
        (COMP, {"model": "tiny", "prompt": "x", "max_tokens": -3}, 400, {"param": "max_tokens"}),
        (CHAT, {"model": "tiny", "messages": MSG, "max_tokens": 0}, 400, {"param": "max_tokens"}),
        (CHAT, {"model": "tiny", "messages": MSG, "n": 0}, 400, {"param": "n"}),
        (COMP, {"model": "tiny", "prompt": "x", "n": 17}, 400, {"param": "n"}),
        (COMP, {"model": "tiny", "prompt": "x" * 200}, 400, {"code": "context_length_exceeded"}),
        (
            CHAT,
            {"model": "tiny", "messages": [{"role": "user", "content": "y" * 100}]},
            400,
            {"code": "context_length_exceeded"},
        ),
        (
            COMP,
            {"model": "tiny", "prompt": "x" * 40, "max_tokens": 30},
            400,
            {"code": "context_length_exceeded"},
        ),
        (COMP, {"model": "tiny", "prompt": "x", "max_tokens": 33}, 400, {"param": "max_tokens"}),
        (CHAT, {"model": "tiny", "messages": []}, 400, {"param": "messages"}),
        (CHAT, {"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}, 400, {}),
        (CHAT, {"model": "tiny", "messages": MSG, "temperature": 5}, 400, {"param": "temperature"}),
        (COMP, {"model": "tiny", "prompt": "x", "stop": [""]}, 400, {"param": "stop"}),
        (COMP, {"model": "tiny", "prompt": [1, 99999]}, 400, {"param": "prompt"}),
        (COMP, {"model": "tiny", "prompt": []}, 400, {"param": "prompt"}),
        (COMP, [1, 2], 400, {}),
        (COMP, {"prompt": "x"}, 400, {"param": "model"}),
        (CHAT, {"model": "tiny:sc@x", "messages": MSG}, 400, {"param": "model"}),
        (
            CHAT,
            {"model": "tiny", "messages": MSG, "reasoning": {"strategy": "magic"}},
            400,
            {"code": "strategy_not_available"},
        ),
        (CHAT, {"model": "tiny:magic", "messages": MSG}, 400, {"code": "strategy_not_available"}),
        (
            COMP,
            {"model": "tiny:sc@2", "prompt": "x", "reasoning": {"task": "nope"}},
            400,
            {"param": "reasoning"},
        ),
        (COMP, {"model": "tiny", "prompt": "x", "logprobs": 6}, 400, {"param": "logprobs"}),
        (COMP, {"model": "tiny", "prompt": "x", "max_tokens": 0}, 400, {"param": "max_tokens"}),
        (
            CHAT,
            {"model": "tiny", "messages": MSG, "top_logprobs": 21},
            400,
            {"param": "top_logprobs"},
        ),
        (
            CHAT,
            {"model": "tiny", "messages": MSG, "top_logprobs": 2},
            400,
            {"param": "top_logprobs"},
        ),
        (
            CHAT,
            {"model": "tiny", "messages": MSG, "tools": [{"type": "function"}]},
            400,
            {"param": "tools", "code": "unsupported"},
        ),
        (
            CHAT,
            {"model": "tiny", "messages": MSG, "response_format": {"type": "json_object"}},
            400,
            {"param": "response_format", "code": "unsupported"},
        ),
        (
            CHAT,
            {"model": "tiny", "messages": [{"role": "tool", "content": "x"}]},
            400,
            {"param": "messages.0.role"},
        ),
        ("/v1/nothing", {}, 404, {}),
    ],
)
def test_bad_requests_get_openai_errors(
    server: str, path: str, body: Any, status: int, expect: dict[str, str]
) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(server + path, content=content, headers={"content-type": "application/json"})
    assert_error(r, status, **expect)


def test_openai_client_raises_on_bad_request(server: str) -> None:
    c = client(server)
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=MSG)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.completions.create(model="tiny", prompt="x", max_tokens=-1)


def test_method_not_allowed_and_form_content_type(server: str) -> None:
    assert_error(httpx.get(server + COMP), 405, code="method_not_allowed")
    # `curl -d` sends application/x-www-form-urlencoded; the body is still read as JSON.
    body = json.dumps({"model": "tiny", "prompt": "x", "max_tokens": 2, "temperature": 0})
    r = httpx.post(
        server + COMP,
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text


def test_models_and_health(server: str) -> None:
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    h = httpx.get(f"{server}/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny" and "direct" in h["strategies"]
    assert h["max_pending"] == 16 + 256
    page = httpx.get(server + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


# --- limits: disconnects, queue, API key -----------------------------------------------------


def test_disconnect_mid_stream_frees_the_slot(tiny_run: Path) -> None:
    app, engine = make_server(tiny_run, max_batch=1, max_tokens=60)
    step, cancel = engine.step, engine.cancel
    cancelled: list[Any] = []

    def slow_step() -> Any:  # 60 tokens take >= 1.2 s, so the slot is visibly held
        time.sleep(0.02)
        return step()

    def record_cancel(req: Any) -> None:
        cancelled.append(req)
        cancel(req)

    engine.step, engine.cancel = slow_step, record_cancel  # type: ignore[method-assign]
    long = {"model": "tiny", "prompt": "x", "max_tokens": 60, "temperature": 0}
    with live_server(app) as url:
        with (
            httpx.Client(base_url=url, timeout=30) as h,
            h.stream("POST", COMP, json={**long, "stream": True, "ignore_eos": True}) as r,
        ):
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break  # first token arrived: go away mid-stream
        t0 = time.monotonic()
        r2 = httpx.post(url + COMP, json={**long, "max_tokens": 3}, timeout=30)
        elapsed = time.monotonic() - t0
        assert r2.status_code == 200
        h = httpx.get(url + "/health").json()
    assert len(cancelled) == 1
    seq = cancelled[0].seqs[0]
    assert seq.finish_reason == "cancelled" and len(seq.token_ids) < 60
    assert elapsed < 0.8, f"the next request waited {elapsed:.2f} s for the slot"
    assert h["pending"] == 0 and h["running"] == 0


def test_non_streaming_client_gone_and_timeout(tiny_run: Path) -> None:
    app, engine = make_server(tiny_run, max_batch=1, max_tokens=60, timeout=2.0)
    step, cancel = engine.step, engine.cancel
    cancelled: list[Any] = []

    def slow_step() -> Any:
        time.sleep(0.05)  # 60 tokens take >= 3 s: longer than the 2 s timeout
        return step()

    def record_cancel(req: Any) -> None:
        cancelled.append(req)
        cancel(req)

    engine.step, engine.cancel = slow_step, record_cancel  # type: ignore[method-assign]
    body = {"model": "tiny", "prompt": "x", "max_tokens": 60, "temperature": 0, "ignore_eos": True}
    with live_server(app) as url:
        assert_error(httpx.post(url + COMP, json=body, timeout=30), 504, code="timeout")
        with httpx.stream("POST", url + COMP, json={**body, "stream": True}, timeout=30) as r:
            last = [x for x in r.iter_lines() if x.startswith("data: ")][-2:]
        assert json.loads(last[0][6:])["error"]["code"] == "timeout" and last[1] == "data: [DONE]"
        with pytest.raises(httpx.ReadTimeout):  # the client gives up after 0.2 s
            httpx.post(url + COMP, json=body, timeout=0.2)
        for _ in range(100):  # the server notices within its 0.5 s poll
            if len(cancelled) == 3:
                break
            time.sleep(0.05)
        h = httpx.get(url + "/health").json()
    assert len(cancelled) == 3
    timed_out, _, gone = (len(r.seqs[0].token_ids) for r in cancelled)
    assert timed_out < 60
    # Cancelled on noticing the client left (<= 0.5 s after it did), not at the 2 s timeout.
    assert gone < timed_out / 2, (gone, timed_out)
    assert h["pending"] == 0 and h["running"] == 0


def test_full_queue_gets_429(tiny_run: Path) -> None:
    app, engine = make_server(tiny_run, max_batch=1, max_queue=1, max_tokens=8)
    gate, step = threading.Event(), engine.step

    def gated_step() -> Any:
        gate.wait(30)
        return step()

    engine.step = gated_step  # type: ignore[method-assign]
    body = {"model": "tiny", "prompt": "x", "max_tokens": 4, "temperature": 0}
    with live_server(app) as url, ThreadPoolExecutor(2) as pool:
        held = [pool.submit(httpx.post, url + COMP, json=body, timeout=60) for _ in range(2)]
        for _ in range(200):
            if httpx.get(url + "/health").json()["pending"] == 2:
                break
            time.sleep(0.05)
        r = httpx.post(url + COMP, json=body, timeout=10)
        assert_error(r, 429, type="rate_limit_error", code="queue_full")
        gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert httpx.post(url + COMP, json=body, timeout=30).status_code == 200


def test_api_key(tiny_run: Path) -> None:
    app, _ = make_server(tiny_run, max_batch=2, api_key="sekret")
    with live_server(app) as url:
        assert_error(httpx.get(url + "/v1/models"), 401, code="invalid_api_key")
        bad = {"Authorization": "Bearer wrong"}
        assert_error(httpx.get(url + "/v1/models", headers=bad), 401, code="invalid_api_key")
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong").models.list()
        good = client(url, "sekret")
        assert good.models.list().data[0].id == "tiny"
        r = good.completions.create(model="tiny", prompt="x", max_tokens=2, temperature=0)
        assert r.usage.completion_tokens == 2
        assert httpx.get(url + "/health").status_code == 200  # health and page stay open


# --- reasoning strategies --------------------------------------------------------------------


def test_direct_strategy_by_suffix_and_field(server: str, reference: Engine) -> None:
    msgs = [{"role": "user", "content": "def f"}]
    want = reference.chat(msgs, greedy(10)).text  # type: ignore[arg-type]
    c = client(server)
    for model, extra in [("tiny:direct", None), ("tiny", {"reasoning": {"strategy": "direct"}})]:
        r = c.chat.completions.create(
            model=model, messages=msgs, max_tokens=10, temperature=0, extra_body=extra
        )
        assert r.choices[0].message.content == want


def test_reasoning_strategy_returns_traces_and_compute(server: str) -> None:
    body = {
        "model": "tiny:sc@2",
        "messages": [{"role": "user", "content": "What is 2+3?"}],
        "max_tokens": 8,
        "reasoning": {"return_traces": True},
    }
    r = httpx.post(server + CHAT, json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    rs = out["reasoning"]
    assert rs["strategy"] == "sc@2" and len(rs["traces"]) == 2
    assert (
        rs["compute"]["calls"] >= 1 and rs["compute"]["tokens"] == out["usage"]["completion_tokens"]
    )
    assert out["choices"][0]["message"]["content"] == (rs["answer"] or "")
    # The same through the body field, streamed: the answer and the record arrive as chunks.
    body = {**body, "model": "tiny", "stream": True}
    body["reasoning"] = {"strategy": "sc", "k": 2}
    with httpx.stream("POST", server + CHAT, json=body, timeout=60) as s:
        data = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: {")]
    assert data[-1]["reasoning"]["strategy"] == "sc@2"
