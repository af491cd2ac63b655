"""Engines for tests: a scripted stand-in whose replies come from a function of the prompt text,
and a counting wrapper of the real engine."""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Sequence

import torch

from lmlab.data.tokenizer import char_tokenizer
from lmlab.infer.engine import Completion, Engine, SamplingParams
from tests.conftest import tiny_model_config

Reply = Callable[[str, int, SamplingParams], tuple[str, float]]


class ScriptedEngine:
    """`generate` like the engine's (n samples, stop strings, the token cap, logprobs), with
    each sample's text and per-token log-probability given by `reply(prompt, index, params)`;
    counts every token it hands out in `generated` and every prompt token it would prefill in
    `prefilled` (once per prompt: the engine's `n` samples of a prompt share one prefill), and
    records each prompt's (length, generated lengths) in `requests` and its text in `prompts`."""

    def __init__(self, reply: Reply, max_len: int = 4096) -> None:
        self.reply = reply
        self.tokenizer = char_tokenizer([string.printable])
        self.max_len = max_len
        self.cfg = tiny_model_config()
        self.generated = 0
        self.prefilled = 0
        self.requests: list[tuple[int, list[int]]] = []
        self.prompts: list[str] = []
        self.calls: list[tuple[int, SamplingParams]] = []

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        tok = self.tokenizer
        self.calls.append((len(prompts), params))
        out = []
        for ids in prompts:
            prompt = tok.decode(ids)
            comps = []
            for i in range(params.n):
                text, lp = self.reply(prompt, i, params)
                hits = [(text.find(s), s) for s in params.stop or [] if s in text]
                if hits:
                    at, s = min(hits)
                    kept, token_ids = text[:at], tok.encode(text[: at + len(s)])
                else:
                    kept, token_ids = text, [*tok.encode(text), tok.end_id]
                finish = "stop"
                if len(token_ids) > params.max_new_tokens:
                    token_ids = token_ids[: params.max_new_tokens]
                    kept, finish = tok.decode(token_ids), "length"
                self.generated += len(token_ids)
                logprobs = [lp] * len(token_ids) if params.logprobs else None
                comps.append(Completion(kept, token_ids, finish, logprobs, len(ids)))
            self.prefilled += len(ids)
            self.prompts.append(prompt)
            self.requests.append((len(ids), [len(c.token_ids) for c in comps]))
            out.append(comps)
        return out


class CountingModel:
    """The engine's model, counting the tokens of forward passes called from outside the
    engine (ToT's `propose` reads the next line's first tokens with one)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.inner = model
        self.prefilled = 0

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self.inner.parameters()

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.prefilled += ids.numel()
        return self.inner(ids)


class CountingEngine:
    """The real engine, counting the tokens it generates and the prompt tokens it prefills
    (once per prompt, as the engine shares one prefill among a prompt's samples)."""

    def __init__(self, engine: Engine) -> None:
        self.inner = engine
        self.model = CountingModel(engine.model)
        self.generated = 0
        self.prefilled_by_engine = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    @property
    def prefilled(self) -> int:
        return self.prefilled_by_engine + self.model.prefilled

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        outs = self.inner.generate(prompts, params)
        self.generated += sum(len(c.token_ids) for o in outs for c in o)
        self.prefilled_by_engine += sum(len(p) for p in prompts)
        return outs
