"""`POST /v1/completions`: text completion of a string, strings or token ids, answered as
OpenAI's `text_completion` or, streamed, as `text_completion` chunks (text deltas, one finish
chunk per choice, `data: [DONE]`). With `echo` each choice's text starts with its prompt (a
stream sends it first, once the prompt is scored) and, with `logprobs`, its logprobs start
with the prompt's tokens (the first one null)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from starlette.concurrency import run_in_threadpool

from lmlab.data.tokenizer import Tokenizer
from lmlab.infer.engine import Completion, Request, TopLogprobs
from lmlab.serve import schemas as S
from lmlab.serve.generation import Head, Service, reported
from lmlab.serve.logprobs import completion_logprobs
from lmlab.serve.params import Prepared, completion_request
from lmlab.serve.worker import Piece


class CompletionFormat:
    """Completions' answer shapes (see `generation.Format`)."""

    prefix = "cmpl"

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok

    def result(
        self, head: Head, done: list[Completion], prep: Prepared, usage: S.Usage
    ) -> S.TextCompletion:
        choices = []
        for i, c in enumerate(done):
            p = i // prep.params.n
            echo = prep.echo[p] if prep.echo is not None else ""
            logprobs = None
            if prep.params.logprobs:
                ids, lps, top = reported(c, prep.params, self.tok.end_id)
                if prep.echo is not None:
                    ids, lps, top = self._prompt_then(prep.prompts[p], c, ids, lps, top)
                logprobs = completion_logprobs(self.tok, ids, lps, top)
            choices.append(
                S.CompletionChoice(
                    index=i, text=echo + c.text, finish_reason=c.finish_reason, logprobs=logprobs
                )
            )
        return self.chunk(head, choices, usage=usage)

    @staticmethod
    def _prompt_then(
        prompt: list[int],
        c: Completion,
        ids: list[int],
        lps: list[float],
        top: list[TopLogprobs] | None,
    ) -> tuple[list[int], list[float | None], list[TopLogprobs | None] | None]:
        """The prompt's tokens, logprobs (the first null) and alternatives, then the answer's."""
        scores: list[float | None] = [None, *(c.prompt_logprobs or [])]
        alts: list[TopLogprobs | None] | None = None
        if top is not None:
            alts = [None, *(c.prompt_top_logprobs or []), *top]
        return [*prompt, *ids], [*scores, *lps], alts

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

    def echo(self, head: Head, prep: Prepared, prompt: int, req: Request) -> list[S.TextCompletion]:
        assert prep.echo is not None and req.prompt_logprobs is not None
        logprobs = None
        if prep.params.logprobs:
            top = None
            if prep.params.top_logprobs:
                top = [None, *(req.prompt_top_logprobs or [])]
            scores: list[float | None] = [None, *req.prompt_logprobs]
            logprobs = completion_logprobs(self.tok, req.prompt, scores, top)
        n = prep.params.n
        return [
            self.chunk(
                head,
                [
                    S.CompletionChoice(
                        index=i, text=prep.echo[prompt], finish_reason=None, logprobs=logprobs
                    )
                ],
            )
            for i in range(prompt * n, prompt * n + n)
        ]

    def delta(self, head: Head, index: int, piece: Piece, prep: Prepared) -> S.TextCompletion:
        logprobs = None
        if prep.params.logprobs:
            start = piece.offset
            if prep.echo is not None:  # offsets count the echoed prompt's text too
                start += len(prep.echo[index // prep.params.n])
            top = piece.top_logprobs if prep.params.top_logprobs else None
            logprobs = completion_logprobs(
                self.tok, piece.token_ids, piece.logprobs, top, start=start
            )
        choice = S.CompletionChoice(
            index=index, text=piece.text, finish_reason=None, logprobs=logprobs
        )
        return self.chunk(head, [choice])

    def finish(self, head: Head, index: int, reason: str) -> S.TextCompletion:
        return self.chunk(head, [S.CompletionChoice(index=index, text="", finish_reason=reason)])

    def usage_chunk(self, head: Head, usage: S.Usage) -> S.TextCompletion:
        return self.chunk(head, [], usage=usage)

    @staticmethod
    def chunk(head: Head, choices: list[S.CompletionChoice], **kw: Any) -> S.TextCompletion:
        return S.TextCompletion(
            id=head.id, created=head.created, model=head.model, choices=choices, **kw
        )


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
