"""The one path of every generating request, chat or completions: admission (429 when full), then
a job of the engine thread (`direct`) or a reasoning strategy in a thread, then the answer as JSON
or as server-sent events. Endpoints differ only in the shape of their answers, which each writes
through its `Format`.

Reasoning: `direct` is the model's own reply with the request's sampling; any other strategy is
`lmlab.reason`'s, answers `Prepared.question`, runs in a thread whose engine calls are jobs of
the same engine thread (they join the running batch), and is answered once it has decided, with
the compute it spent (and its traces, on request) under `reasoning`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request as HTTPRequest
from fastapi.responses import Response
from pydantic import BaseModel

from lmlab.infer.engine import Completion, Request, SamplingParams, TopLogprobs
from lmlab.reason.strategies import parse_strategy
from lmlab.serve import schemas as S
from lmlab.serve.config import DEFAULT_NAME, ServeConfig
from lmlab.serve.errors import APIError, event_error, stream_error
from lmlab.serve.params import Prepared
from lmlab.serve.stream import DONE, Deadline, EventStream, job_events, sse, sse_all
from lmlab.serve.worker import FINAL, EngineWorker, Event, Job, Piece


@dataclass
class Head:
    """What every object of one response repeats."""

    id: str
    created: int
    model: str


class Format(Protocol):
    """How an endpoint writes its answers: whole, reasoned, and as stream chunks."""

    prefix: str
    """Of the response id (`chatcmpl`, `cmpl`)."""

    def result(
        self, head: Head, done: list[Completion], prep: Prepared, usage: S.Usage
    ) -> BaseModel: ...

    def reasoned(
        self, head: Head, reasoning: S.Reasoning, answer: str, usage: S.Usage
    ) -> BaseModel: ...

    def reasoned_chunks(
        self,
        head: Head,
        reasoning: S.Reasoning,
        answer: str,
        usage: S.Usage,
        include_usage: bool,
    ) -> list[BaseModel]: ...

    def opening(self, head: Head, n: int) -> list[BaseModel]: ...

    def echo(self, head: Head, prep: Prepared, prompt: int, req: Request) -> list[BaseModel]:
        """Chunks repeating scored prompt `prompt` (completions' echo; chat has none)."""
        ...

    def delta(self, head: Head, index: int, piece: Piece, prep: Prepared) -> BaseModel: ...

    def finish(self, head: Head, index: int, reason: str) -> BaseModel: ...

    def usage_chunk(self, head: Head, usage: S.Usage) -> BaseModel: ...


class Service:
    """What the handlers share: the config, the engine thread and the count of held requests."""

    def __init__(self, cfg: ServeConfig, worker: EngineWorker) -> None:
        self.cfg, self.worker, self.engine = cfg, worker, worker.engine
        self.name = cfg.name or DEFAULT_NAME
        self.pending = 0
        self.max_pending = self.engine.max_batch + cfg.max_queue
        self.created = int(time.time())

    def admit(self) -> None:
        """Hold one more request, or answer 429 when max_batch + max_queue are held."""
        if self.pending >= self.max_pending:
            raise APIError(
                429,
                f"the server is busy ({self.pending} requests held, limit "
                f"{self.max_pending}); retry later",
                type="rate_limit_error",
                code="queue_full",
            )
        self.pending += 1

    async def respond(
        self, prep: Prepared, fmt: Format, body: S._SamplingRequest, request: HTTPRequest
    ) -> Any:
        """Answer a validated request: JSON, a stream, or 499 if its client left first."""
        head = Head(f"{fmt.prefix}-{uuid.uuid4().hex}", int(time.time()), body.model)
        stream = bool(body.stream)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.admit()
        deadline = Deadline(self.cfg.timeout)
        if prep.strategy != "direct":
            reasoning, answer, usage = await self.reason(prep, deadline)
            if stream:
                chunks = fmt.reasoned_chunks(head, reasoning, answer, usage, include_usage)
                return EventStream(sse_all(chunks))
            return fmt.reasoned(head, reasoning, answer, usage)
        job, events = self.start(prep, stream)
        if stream:
            return EventStream(
                self.chunks(head, fmt, prep, job_events(events, deadline), include_usage),
                on_close=lambda: self.worker.cancel(job),
            )
        done = await self.wait(job, events, deadline, request)
        if done is None:
            return Response(status_code=499)
        return fmt.result(head, done, prep, usage_of(prep.prompts, done))

    # --- engine jobs ----------------------------------------------------------------------

    def start(self, prep: Prepared, stream: bool) -> tuple[Job, asyncio.Queue[list[Event]]]:
        """Hand a job to the engine thread; its events arrive on the returned queue."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[list[Event]] = asyncio.Queue()

        def deliver(batch: list[Event]) -> None:  # on the loop thread
            if any(kind in FINAL for kind, _, _ in batch):
                self.pending -= 1
            events.put_nowait(batch)

        job = Job(
            prep.prompts, prep.params, lambda b: loop.call_soon_threadsafe(deliver, b), stream
        )
        self.worker.submit(job)
        return job, events

    async def wait(
        self,
        job: Job,
        events: asyncio.Queue[list[Event]],
        deadline: Deadline,
        request: HTTPRequest,
    ) -> list[Completion] | None:
        """The completions of a non-streaming job (None if its client went away)."""
        async for kind, value, status in job_events(events, deadline, request.is_disconnected):
            if kind == "done":
                return value
            if kind in FINAL:
                self.worker.cancel(job)  # timed out or client gone (a no-op if the job ended)
                if kind == "error":
                    raise event_error(value, status)
                return None
        return None

    @staticmethod
    async def chunks(
        head: Head,
        fmt: Format,
        prep: Prepared,
        events: AsyncIterator[Event],
        include_usage: bool,
    ) -> AsyncIterator[str]:
        """A streaming job's events as the endpoint's chunks, ending with [DONE]."""
        for chunk in fmt.opening(head, prep.params.n):
            yield sse(chunk)
        async for kind, a, b in events:
            if kind == "delta":
                yield sse(fmt.delta(head, a, b, prep))
            elif kind == "prompt":
                for chunk in fmt.echo(head, prep, a, b):
                    yield sse(chunk)
            elif kind == "finish":
                yield sse(fmt.finish(head, a, b))
            elif kind == "done" and include_usage:
                yield sse(fmt.usage_chunk(head, usage_of(prep.prompts, a)))
            elif kind == "error":
                yield stream_error(a, b)
        yield DONE

    # --- reasoning ------------------------------------------------------------------------

    async def reason(self, prep: Prepared, deadline: Deadline) -> tuple[S.Reasoning, str, S.Usage]:
        """Run the request's strategy on its question in a thread; returns the reasoning record,
        the answer text and the usage."""
        opts = prep.reasoning
        settings = dict(opts.model_extra or {})
        settings.update(max_new_tokens=prep.max_tokens, seed=prep.params.seed)
        spec = prep.strategy + (f"@{opts.k}" if opts.k is not None else "")
        try:
            try:
                strategy = parse_strategy(spec, **settings)
                run = asyncio.to_thread(strategy.run, _WorkerEngine(self.worker), [prep.question])
                result = (await deadline.run(run))[0]
            # Bad settings are ValueErrors by the project's convention (ReasonError, the world's
            # WorldError for an unknown task, GenerationError) or TypeErrors (a wrong type).
            except (ValueError, TypeError) as e:
                raise APIError(
                    400, f"reasoning: {e}", param="reasoning", code="invalid_value"
                ) from None
        finally:
            self.pending -= 1
        c = result.compute
        reasoning = S.Reasoning(
            strategy=spec,
            answer=result.answer,
            confidence=result.confidence,
            compute=S.Compute(
                tokens=c.tokens, prompt_tokens=c.prompt_tokens, flops=c.flops, calls=c.calls
            ),
            traces=list(result.traces) if opts.return_traces else None,
            info=json.loads(json.dumps(result.info, default=str)) if opts.return_traces else None,
        )
        usage = S.Usage(
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.tokens,
            total_tokens=c.prompt_tokens + c.tokens,
        )
        return reasoning, result.answer or "", usage


class _WorkerEngine:
    """The engine as `lmlab.reason` strategies see it, generating through the engine thread."""

    def __init__(self, worker: EngineWorker) -> None:
        self.worker = worker
        self.tokenizer = worker.engine.tokenizer
        self.max_len = worker.engine.max_len
        self.max_batch = worker.engine.max_batch
        self.cfg = worker.engine.cfg

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        return self.worker.generate(prompts, params)


def usage_of(prompts: list[list[int]], done: list[Completion]) -> S.Usage:
    """OpenAI's usage: prompt tokens (each prompt once) and generated tokens (every sample)."""
    p = sum(len(x) for x in prompts)
    c = sum(len(x.token_ids) for x in done)
    return S.Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def reported(
    c: Completion, params: SamplingParams, end_id: int
) -> tuple[list[int], list[float], list[TopLogprobs] | None]:
    """Token ids, logprobs and alternatives (None unless asked) of a completion's text (without
    its final stop token)."""
    ids, lps, top = c.token_ids, c.logprobs or [], c.top_logprobs
    stops = set(params.stop_token_ids or [])
    if not params.ignore_eos:
        stops.add(end_id)
    if c.finish_reason == "stop" and ids and ids[-1] in stops:
        ids, lps, top = ids[:-1], lps[:-1], top[:-1] if top is not None else None
    return ids, lps, top
