"""Log-probabilities over HTTP: completions `echo` (the prompt's own logprobs, first null),
integer `logprobs` (top alternatives), `max_tokens: 0` (scoring only), lm-eval's exact
log-likelihood request, chat `top_logprobs`, and streams that carry logprobs; each against the
model scored directly (`model/scoring.py`) or the engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")

from lmlab.infer import Engine, SamplingParams  # noqa: E402
from lmlab.model.load import load_run  # noqa: E402
from lmlab.model.scoring import token_logprobs  # noqa: E402
from tests.serve.test_app import client  # noqa: E402

ATOL = 1e-4


def scored(run: Path, ids: list[int]) -> list[float]:
    """log p(ids[t] | ids[:t]) for t >= 1 from a plain forward of the run's model."""
    model, _, _ = load_run(run)
    with torch.no_grad():
        x = torch.tensor([ids])
        return token_logprobs(model(x), x)[0].tolist()


def test_echo_scores_the_prompt_without_generating(
    server: str, reference: Engine, tiny_run: Path
) -> None:
    c = client(server)
    tok = reference.tokenizer
    for prompt in ("def f(x): return x", [1, *tok.encode("the quick brown fox")]):
        ids = reference.encode_prompt(prompt)
        r = c.completions.create(model="tiny", prompt=prompt, echo=True, max_tokens=0, logprobs=2)
        ch = r.choices[0]
        assert ch.text == (prompt if isinstance(prompt, str) else tok.decode(ids))
        assert ch.finish_reason == "length"
        assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (len(ids), 0)
        lp = ch.logprobs
        assert lp.tokens == [tok.decode([t], skip_special=False) for t in ids]
        assert lp.tokens[0] == "<|bos|>" and lp.text_offset[:2] == [0, 0]
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.token_logprobs[1:] == pytest.approx(scored(tiny_run, ids), abs=ATOL)
        for t, (s, top) in enumerate(
            zip(lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True), 1
        ):
            # Two alternatives plus the prompt's own token when it is not among them.
            assert 2 <= len(top) <= 3 and top[lp.tokens[t]] == s
            assert max(top.values()) >= s
        # Without logprobs, echo returns the text alone.
        r = c.completions.create(model="tiny", prompt=prompt, echo=True, max_tokens=0)
        assert r.choices[0].text == ch.text and r.choices[0].logprobs is None


def test_lm_eval_loglikelihood_request(server: str, reference: Engine, tiny_run: Path) -> None:
    """What lm-eval's `local-completions` sends for log-likelihood requests (a batch of
    token-id prompts, echo, max_tokens 1, logprobs 1, temperature 0) and how it reads the
    answer: sum(token_logprobs[ctxlen:-1]), greedy when each equals its map's largest value."""
    tok = reference.tokenizer
    ctx = tok.encode("the quick brown")
    pairs = [(ctx, tok.encode(" fox")), (ctx, tok.encode(" dog jumps")), ([1], tok.encode("x"))]
    model, _, _ = load_run(tiny_run)
    body = {
        "model": "tiny",
        "prompt": [a + b for a, b in pairs],
        "temperature": 0,
        "max_tokens": 1,
        "logprobs": 1,
        "seed": 1234,
        "echo": True,
    }
    r = httpx.post(f"{server}/v1/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda ch: ch["index"])
    assert len(choices) == len(pairs)
    for (a, b), ch in zip(pairs, choices, strict=True):
        lp = ch["logprobs"]
        ids = a + b
        assert len(lp["token_logprobs"]) == len(ids) + 1  # the prompt, then the one new token
        want = scored(tiny_run, ids)[len(a) - 1 :]
        got = lp["token_logprobs"][len(a) : -1]
        assert got == pytest.approx(want, abs=ATOL)
        is_greedy = all(
            t == max(top.values())
            for t, top in zip(got, lp["top_logprobs"][len(a) : -1], strict=True)
        )
        # Greedy exactly when each continuation token is the model's argmax after its prefix.
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, :-1]
        logits[:, tok.vocab_size :] = -float("inf")  # padding ids are never a choice
        argmax = logits.argmax(-1).tolist()[len(a) - 1 :]
        assert is_greedy == (argmax == b)
        # The one generated token is greedy: its logprob is its map's largest value.
        assert lp["token_logprobs"][-1] == max(lp["top_logprobs"][-1].values())


def test_chat_top_logprobs_are_the_engines(server: str, reference: Engine) -> None:
    msgs = [{"role": "user", "content": "def f"}]
    want = reference.chat(
        msgs,  # type: ignore[arg-type]
        SamplingParams(max_new_tokens=8, temperature=0.0, logprobs=True, top_logprobs=3),
    )
    r = client(server).chat.completions.create(
        model="tiny", messages=msgs, max_tokens=8, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    n = len(want.token_ids) - (want.finish_reason == "stop")
    assert want.top_logprobs is not None and len(content) == n
    tok = reference.tokenizer
    for entry, t, alts in zip(content, want.token_ids, want.top_logprobs, strict=False):
        assert entry.token == tok.decode([t], skip_special=False)
        assert [a.token for a in entry.top_logprobs] == [
            tok.decode([a], skip_special=False) for a, _ in alts
        ]
        assert [a.logprob for a in entry.top_logprobs] == pytest.approx(
            [v for _, v in alts], abs=ATOL
        )
        assert entry.top_logprobs[0].logprob == entry.logprob  # greedy: exactly the best


def stream_lines(server: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    with httpx.stream("POST", server + path, json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: {"):
                out.append(json.loads(line[6:]))
    return out


@pytest.mark.parametrize("echo", [False, True])
def test_completion_streams_carry_logprobs(server: str, echo: bool) -> None:
    body: dict[str, Any] = {
        "model": "tiny",
        "prompt": "def f",
        "max_tokens": 12,
        "logprobs": 2,
        "echo": echo,
        "temperature": 1.0,
        "seed": 3,
        "n": 2,
    }
    whole = httpx.post(f"{server}/v1/completions", json=body, timeout=60).json()["choices"]
    chunks = stream_lines(server, "/v1/completions", body)
    for ch in sorted(whole, key=lambda ch: ch["index"]):
        parts = [c for k in chunks for c in k["choices"] if c["index"] == ch["index"]]
        assert "".join(p["text"] for p in parts) == ch["text"]
        joined: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": []}
        offsets: list[int] = []
        for p in parts:
            if p.get("logprobs"):
                for k in joined:
                    joined[k] += p["logprobs"][k]
                offsets += p["logprobs"]["text_offset"]
        assert joined["tokens"] == ch["logprobs"]["tokens"]
        assert joined["token_logprobs"] == pytest.approx(ch["logprobs"]["token_logprobs"])
        assert joined["top_logprobs"] == ch["logprobs"]["top_logprobs"]
        assert offsets == ch["logprobs"]["text_offset"]
        if echo:  # the prompt comes first, with its scores
            assert parts[0]["text"] == "def f" and parts[0]["logprobs"]["token_logprobs"][0] is None


def test_chat_streams_carry_logprobs(server: str) -> None:
    body: dict[str, Any] = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 12,
        "logprobs": True,
        "top_logprobs": 2,
        "temperature": 1.0,
        "seed": 1,
    }
    whole = httpx.post(f"{server}/v1/chat/completions", json=body, timeout=60).json()
    want = whole["choices"][0]["logprobs"]["content"]
    chunks = stream_lines(server, "/v1/chat/completions", body)
    got = [
        e
        for k in chunks
        for c in k["choices"]
        if c.get("logprobs")
        for e in c["logprobs"]["content"]
    ]
    assert len(got) == len(want) > 0
    assert [e["token"] for e in got] == [e["token"] for e in want]
    assert [e["top_logprobs"] for e in got] == [e["top_logprobs"] for e in want]
    text = "".join(c["delta"].get("content") or "" for k in chunks for c in k["choices"])
    assert text == whole["choices"][0]["message"]["content"]
