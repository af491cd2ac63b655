"""A scripted stand-in for the engine: replies come from a function of the prompt text."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence

from lmlab.data.tokenizer import char_tokenizer
from lmlab.infer.engine import Completion, SamplingParams
from tests.conftest import tiny_model_config

Reply = Callable[[str, int, SamplingParams], tuple[str, float]]


class ScriptedEngine:
    """`generate` like the engine's (n samples, stop strings, the token cap, logprobs), with
    each sample's text and per-token log-probability given by `reply(prompt, index, params)`;
    counts every token it hands out in `generated`."""

    def __init__(self, reply: Reply, max_len: int = 4096) -> None:
        self.reply = reply
        self.tokenizer = char_tokenizer([string.printable])
        self.max_len = max_len
        self.cfg = tiny_model_config()
        self.generated = 0
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
            out.append(comps)
        return out
