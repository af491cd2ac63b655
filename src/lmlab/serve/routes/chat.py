"""`POST /v1/chat/completions`: the conversation in the chat template, answered as OpenAI's
`chat.completion` or, streamed, as `chat.completion.chunk` events (a first chunk with the
assistant role, then content deltas, one finish chunk per choice, `data: [DONE]`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi import Request as HTTPRequest
from starlette.concurrency import run_in_threadpool

from lmlab.data.tokenizer import Tokenizer
from lmlab.infer.engine import Completion, Request
from lmlab.serve import schemas as S
from lmlab.serve.generation import Head, Service, reported
from lmlab.serve.logprobs import chat_logprobs
from lmlab.serve.params import Prepared, chat_request
from lmlab.serve.worker import Piece


class ChatFormat:
    """Chat's answer shapes (see `generation.Format`)."""

    prefix = "chatcmpl"

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok

    def result(
        self, head: Head, done: list[Completion], prep: Prepared, usage: S.Usage
    ) -> S.ChatCompletion:
        params = prep.params
        choices = [
            S.ChatChoice(
                index=i,
                message=S.AssistantMessage(content=c.text),
                finish_reason=c.finish_reason,
                logprobs=S.ChoiceLogprobs(
                    content=chat_logprobs(self.tok, *reported(c, params, self.tok.end_id))
                )
                if params.logprobs
                else None,
            )
            for i, c in enumerate(done)
        ]
        return S.ChatCompletion(
            id=head.id, created=head.created, model=head.model, choices=choices, usage=usage
        )

    def reasoned(
        self, head: Head, reasoning: S.Reasoning, answer: str, usage: S.Usage
    ) -> S.ChatCompletion:
        return S.ChatCompletion(
            id=head.id,
            created=head.created,
            model=head.model,
            usage=usage,
            reasoning=reasoning,
            choices=[
                S.ChatChoice(
                    index=0, message=S.AssistantMessage(content=answer), finish_reason="stop"
                )
            ],
        )

    def reasoned_chunks(
        self,
        head: Head,
        reasoning: S.Reasoning,
        answer: str,
        usage: S.Usage,
        include_usage: bool,
    ) -> list[S.ChatCompletionChunk]:
        """The answer in one chunk, then the finish chunk carrying the reasoning record."""
        start = S.Delta(role="assistant", content=answer)
        chunks = [
            self.chunk(head, [S.ChatChunkChoice(index=0, delta=start)]),
            self.chunk(
                head,
                [S.ChatChunkChoice(index=0, delta=S.Delta(), finish_reason="stop")],
                reasoning=reasoning,
            ),
        ]
        return [*chunks, self.usage_chunk(head, usage)] if include_usage else chunks

    def opening(self, head: Head, n: int) -> list[S.ChatCompletionChunk]:
        start = S.Delta(role="assistant", content="")
        return [self.chunk(head, [S.ChatChunkChoice(index=i, delta=start) for i in range(n)])]

    def echo(
        self, head: Head, prep: Prepared, prompt: int, req: Request
    ) -> list[S.ChatCompletionChunk]:
        return []

    def delta(self, head: Head, index: int, piece: Piece, prep: Prepared) -> S.ChatCompletionChunk:
        logprobs = None
        if prep.params.logprobs:
            content = chat_logprobs(self.tok, piece.token_ids, piece.logprobs, piece.top_logprobs)
            logprobs = S.ChoiceLogprobs(content=content)
        choice = S.ChatChunkChoice(
            index=index, delta=S.Delta(content=piece.text), logprobs=logprobs
        )
        return self.chunk(head, [choice])

    def finish(self, head: Head, index: int, reason: str) -> S.ChatCompletionChunk:
        choice = S.ChatChunkChoice(index=index, delta=S.Delta(), finish_reason=reason)
        return self.chunk(head, [choice])

    def usage_chunk(self, head: Head, usage: S.Usage) -> S.ChatCompletionChunk:
        return self.chunk(head, [], usage=usage)

    @staticmethod
    def chunk(head: Head, choices: list[S.ChatChunkChoice], **kw: Any) -> S.ChatCompletionChunk:
        return S.ChatCompletionChunk(
            id=head.id, created=head.created, model=head.model, choices=choices, **kw
        )


def router(service: Service) -> APIRouter:
    """The chat endpoint over `service` (mounted under /v1)."""
    routes, fmt = APIRouter(), ChatFormat(service.engine.tokenizer)

    @routes.post("/chat/completions", response_model=S.ChatCompletion)
    async def chat_completions(body: S.ChatCompletionRequest, request: HTTPRequest) -> Any:
        # tokenizing takes time proportional to the text: off the event loop
        prep = await run_in_threadpool(
            chat_request, body, service.engine, service.name, service.cfg.max_tokens
        )
        return await service.respond(prep, fmt, body, request)

    return routes
