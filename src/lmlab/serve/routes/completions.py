"""`POST /v1/completions`: text completion of a string, strings or token ids, answered as
OpenAI's `text_completion` or, streamed, as `text_completion` chunks (text deltas, one finish
chunk per choice, `data: [DONE]`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from starlette.concurrency import run_in_threadpool

from lmlab.data.tokenizer import Tokenizer
from lmlab.infer.engine import Completion, SamplingParams
from lmlab.serve import schemas as S
from lmlab.serve.generation import Head, Service, reported
from lmlab.serve.params import completion_request


class CompletionFormat:
    """Completions' answer shapes (see `generation.Format`)."""

    prefix = "cmpl"

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok

    def result(
        self, head: Head, done: list[Completion], params: SamplingParams, usage: S.Usage
    ) -> S.TextCompletion:
        choices = [
            S.CompletionChoice(
                index=i,
                text=c.text,
                finish_reason=c.finish_reason,
                logprobs=self.logprobs(c, params) if params.logprobs else None,
            )
            for i, c in enumerate(done)
        ]
        return self.chunk(head, choices, usage=usage)

    def reasoned(
        self, head: Head, reasoning: S.Reasoning, answer: str, usage: S.Usage
    ) -> S.TextCompletion:
        choice = S.CompletionChoice(index=0, text=answer, finish_reason="stop")
        return self.chunk(head, [choice], usage=usage, reasoning=reasoning)

    def reasoned_chunks(
        self,
        head: Head,
        reasoning: S.Reasoning,
        answer: str,
        usage: S.Usage,
        include_usage: bool,
    ) -> list[S.TextCompletion]:
        """The whole reasoned answer as one chunk (it carries its usage whatever was asked)."""
        return [self.reasoned(head, reasoning, answer, usage)]

    def opening(self, head: Head, n: int) -> list[S.TextCompletion]:
        return []

    def delta(self, head: Head, index: int, text: str) -> S.TextCompletion:
        return self.chunk(head, [S.CompletionChoice(index=index, text=text, finish_reason=None)])

    def finish(self, head: Head, index: int, reason: str) -> S.TextCompletion:
        return self.chunk(head, [S.CompletionChoice(index=index, text="", finish_reason=reason)])

    def usage_chunk(self, head: Head, usage: S.Usage) -> S.TextCompletion:
        return self.chunk(head, [], usage=usage)

    @staticmethod
    def chunk(head: Head, choices: list[S.CompletionChoice], **kw: Any) -> S.TextCompletion:
        return S.TextCompletion(
            id=head.id, created=head.created, model=head.model, choices=choices, **kw
        )

    def logprobs(self, c: Completion, params: SamplingParams) -> S.CompletionLogprobs:
        """The reported tokens' texts, logprobs and character offsets in the completion."""
        ids, lps = reported(c, params, self.tok.end_id)
        tokens = [self.tok.decode([t]) for t in ids]
        offsets, pos = [], 0
        for s in tokens:
            offsets.append(pos)
            pos += len(s)
        return S.CompletionLogprobs(tokens=tokens, token_logprobs=lps, text_offset=offsets)


def router(service: Service) -> APIRouter:
    """The completions endpoint over `service` (mounted under /v1)."""
    routes, fmt = APIRouter(), CompletionFormat(service.engine.tokenizer)

    @routes.post("/completions", response_model=S.TextCompletion)
    async def completions(body: S.CompletionRequest, request: HTTPRequest) -> Any:
        # tokenizing takes time proportional to the text: off the event loop
        prep = await run_in_threadpool(
            completion_request, body, service.engine, service.name, service.cfg.max_tokens
        )
        return await service.respond(prep, fmt, body, request)

    return routes
