"""Streaming and time limits: a request's `Deadline` (the one timeout path), a job's events until
its end or its deadline, and server-sent events that stop at once when the client goes away.

Every wait of a request goes through its `Deadline`: a job's events (streamed or not) and a
reasoning strategy's run. When it passes, a job's events end with an ("error", message, 504)
event, which a stream sends as an error event before `data: [DONE]` and a non-streaming request
answers as a 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import anyio
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from lmlab.serve.errors import APIError, event_error
from lmlab.serve.worker import FINAL, Event

T = TypeVar("T")

DONE = "data: [DONE]\n\n"
POLL_S = 0.5
"""How often a non-streaming request checks that its client is still there."""


class Deadline:
    """A request's time limit, counted from its admission."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    @property
    def message(self) -> str:
        return f"the request took longer than {self.seconds:g} s"

    def error(self) -> APIError:
        return event_error(self.message, 504)

    async def run(self, work: Awaitable[T]) -> T:
        """`work`'s result, or a 504 APIError once the time is up."""
        try:
            return await asyncio.wait_for(work, max(self.left(), 0.0))
        except asyncio.TimeoutError:
            raise self.error() from None


async def job_events(
    events: asyncio.Queue[list[Event]],
    deadline: Deadline,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[Event]:
    """A job's events up to its final one. The deadline passing ends them with an error event;
    with `gone` (the client disconnected?) checked every POLL_S, a client that left ends them
    with a "cancelled" event. Either way the caller cancels the job."""
    while True:
        left = deadline.left()
        if left <= 0:
            yield ("error", deadline.message, 504)
            return
        try:
            batch = await asyncio.wait_for(
                events.get(), left if gone is None else min(left, POLL_S)
            )
        except asyncio.TimeoutError:
            if gone is not None and await gone():
                yield ("cancelled", None, None)
                return
            continue
        for ev in batch:
            yield ev
            if ev[0] in FINAL:
                return


def sse(obj: BaseModel) -> str:
    """One server-sent event carrying `obj` (unset optional fields left out, as OpenAI does)."""
    return f"data: {obj.model_dump_json(exclude_none=True)}\n\n"


async def sse_all(chunks: Iterable[BaseModel]) -> AsyncIterator[str]:
    """Chunks already computed, as a stream ending with [DONE]."""
    for chunk in chunks:
        yield sse(chunk)
    yield DONE


class EventStream(StreamingResponse):
    """Server-sent events that stop at once when the client disconnects, then `on_close`."""

    def __init__(
        self, content: AsyncIterator[str], on_close: Callable[[], None] = lambda: None
    ) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def stream() -> None:
                    with contextlib.suppress(OSError):  # the client went away as we wrote
                        await self.stream_response(send)
                    tg.cancel_scope.cancel()

                async def watch() -> None:
                    await self.listen_for_disconnect(receive)
                    tg.cancel_scope.cancel()

                tg.start_soon(stream)
                tg.start_soon(watch)
        finally:
            self.on_close()
