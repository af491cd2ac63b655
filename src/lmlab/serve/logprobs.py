"""Token log-probabilities in OpenAI's two shapes: completions' parallel lists (`tokens`,
`token_logprobs`, `top_logprobs` maps, `text_offset`) and chat's per-token objects.

A token's string shows special tokens by name (`<|bos|>`), so that alternatives stay distinct;
`text_offset` counts characters of the answer's text, where special tokens take no room (the
text leaves them out). A completions `top_logprobs` map holds the alternatives and, as OpenAI's
and vLLM's do, the chosen token too, so a token was the greedy choice exactly when its logprob
is the map's largest value (what lm-eval checks for `is_greedy`).
"""

from __future__ import annotations

from collections.abc import Sequence

from lmlab.data.tokenizer import Tokenizer
from lmlab.infer.engine import TopLogprobs
from lmlab.serve import schemas as S


def token_text(tok: Tokenizer, token: int) -> str:
    """A token's string, special tokens by name."""
    return tok.decode([token], skip_special=False)


def width(tok: Tokenizer, ids: Sequence[int]) -> int:
    """Characters the tokens add to the text, one by one (special tokens add none)."""
    return sum(len(tok.decode([t])) for t in ids)


def completion_logprobs(
    tok: Tokenizer,
    ids: Sequence[int],
    logprobs: Sequence[float | None],
    top: Sequence[TopLogprobs | None] | None,
    start: int = 0,
) -> S.CompletionLogprobs:
    """Completions' logprobs of `ids` whose text starts at character `start`; `top` None leaves
    out the alternatives (logprobs=0), a None entry is a position without any (an echo's
    first token)."""
    offsets, pos = [], start
    for t in ids:
        offsets.append(pos)
        pos += len(tok.decode([t]))
    maps: list[dict[str, float] | None] | None = None
    if top is not None:
        maps = []
        for t, lp, alts in zip(ids, logprobs, top, strict=True):
            if alts is None or lp is None:
                maps.append(None)
                continue
            m: dict[str, float] = {}
            for alt, alt_lp in alts:  # best first: a string shared by two ids keeps the best
                m.setdefault(token_text(tok, alt), alt_lp)
            m.setdefault(token_text(tok, t), lp)
            maps.append(m)
    return S.CompletionLogprobs(
        tokens=[token_text(tok, t) for t in ids],
        token_logprobs=list(logprobs),
        top_logprobs=maps,
        text_offset=offsets,
    )


def chat_logprobs(
    tok: Tokenizer,
    ids: Sequence[int],
    logprobs: Sequence[float],
    top: Sequence[TopLogprobs] | None,
) -> list[S.TokenLogprob]:
    """Chat's logprobs: per token its string, logprob, UTF-8 bytes and alternatives."""

    def entry(t: int, lp: float) -> S.TopLogprob:
        s = token_text(tok, t)
        return S.TopLogprob(token=s, logprob=lp, bytes=list(s.encode()))

    out = []
    for i, (t, lp) in enumerate(zip(ids, logprobs, strict=True)):
        e = entry(t, lp)
        alts = [entry(a, a_lp) for a, a_lp in top[i]] if top is not None else []
        out.append(S.TokenLogprob(token=e.token, logprob=lp, bytes=e.bytes, top_logprobs=alts))
    return out
