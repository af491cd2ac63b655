"""Limits that keep one client from stalling the server for the others.

A 10 MB prompt used to be tokenized on the event loop before its length was checked, so every
other request, `/health` included, waited 35-45 s for its 400. Now:

- `BodyLimit` (ASGI middleware) answers a request body over `bounds.MAX_REQUEST_BYTES` with 413
  before reading it when its Content-Length says so, else as soon as it grows past the limit,
  and a body that takes over `BODY_TIMEOUT` seconds to arrive with 408;
- `check_text` refuses text longer than any text that fits the context could be (400), before
  the tokenizer sees it; the routes tokenize in a worker thread, never on the event loop;
- `GuardedH11Protocol` (uvicorn's h11 protocol) closes a connection that has not sent a whole
  request head `HEAD_TIMEOUT` seconds after it opened or after its last response: uvicorn itself
  waits forever for a first request, and any byte restarts its keep-alive timer, so a client
  trickling a header would hold a connection open indefinitely; request heads are limited to
  `MAX_HEAD_BYTES`;
- `server_options()` are the uvicorn settings that `lmlab serve` runs with (the protocol above,
  the keep-alive timeout, the head size limit).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from lmlab.bounds import MAX_REQUEST_BYTES
from lmlab.data.tokenizer import Tokenizer
from lmlab.infer.engine import Engine
from lmlab.serve.errors import APIError

BODY_TIMEOUT = 30.0
"""Seconds a request body may take to arrive once its head has (4 MiB in 30 s is 1.1 Mbit/s)."""

HEAD_TIMEOUT = 10.0
"""Seconds a connection may take to send a whole request head."""

KEEP_ALIVE = 5
"""Seconds an idle kept-alive connection stays open between requests (uvicorn's default)."""

DRAIN_FACTOR = 4
"""An oversized body is read and dropped up to this many times the limit before the 413."""

MAX_HEAD_BYTES = 64 * 1024
"""Bytes of one request's head (request line and headers)."""


class BodyLimit:
    """ASGI middleware: read a request's whole body within the size and time limits, then hand
    it to the app; answer 413 or 408 (OpenAI's error shape) otherwise.

    An oversized body is still read (and thrown away, up to `DRAIN_FACTOR` times the limit)
    before the 413, unless the client asked to wait for `100 Continue`: a client such as
    Python's `http.client` sends its whole body before it reads the answer, and would get a
    reset connection instead of the 413 if the server closed first."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES, timeout: float = BODY_TIMEOUT
    ) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        declared = int(length) if length.isdigit() else None  # h11 refuses a malformed one
        too_big = declared is not None and declared > self.max_bytes
        if too_big and headers.get(b"expect", b"").lower() == b"100-continue":
            await self._answer(self._too_large(declared), scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while more and size <= DRAIN_FACTOR * self.max_bytes:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0))
            except asyncio.TimeoutError:
                late = f"the request body did not arrive within {self.timeout:g} s"
                await self._answer(
                    APIError(408, late, code="request_timeout"), scope, receive, send
                )
                return
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            data = message.get("body", b"")
            size += len(data)
            more = message.get("more_body", False)
            too_big = too_big or size > self.max_bytes
            if not too_big:
                chunks.append(data)
        if too_big:
            await self._answer(self._too_large(declared), scope, receive, send)
            return
        body: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)

    def _too_large(self, size: int | None) -> APIError:
        got = f" ({size} bytes)" if size is not None else ""
        return APIError(
            413,
            f"the request body is larger than this server's limit of {self.max_bytes} bytes{got}",
            code="request_too_large",
        )

    @staticmethod
    async def _answer(error: APIError, scope: Scope, receive: Receive, send: Send) -> None:
        await error.response()(scope, receive, send)


def check_text(texts: Sequence[str], engine: Engine, param: str) -> None:
    """A 400 naming `param` if `texts` hold more characters than any text that fits the model's
    context can: a token covers at most as many characters as the longest string in the
    vocabulary, so more than `max_len` times that many cannot be `max_len` tokens. Tokenizers
    that normalize text first (which may shorten it) are not bounded here."""
    limit = text_limit(engine.tokenizer, engine.max_len)
    total = sum(len(t) for t in texts)
    if limit is not None and total > limit:
        raise APIError(
            400,
            f"{param} has {total} characters, more than any text that fits the model's context "
            f"of {engine.max_len} tokens ({limit} characters); shorten it",
            param=param,
            code="context_length_exceeded",
        )


def text_limit(tok: Tokenizer, max_len: int) -> int | None:
    """Most characters of a text that could be `max_len` tokens (None: no bound known)."""
    longest = _longest_token(tok)
    return None if longest is None else max_len * longest


@functools.cache
def _longest_token(tok: Tokenizer) -> int | None:
    if tok.hf.normalizer is not None:
        return None
    return max(len(s) for s in tok.hf.get_vocab(with_added_tokens=True))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head has not arrived
    `head_timeout` seconds after it opened or after its last response."""

    head_timeout = HEAD_TIMEOUT

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self.loop.call_later(self.head_timeout, self._head_timed_out, self.cycle)

    def _head_timed_out(self, cycle: object) -> None:
        # `cycle` is replaced when a request's head has been parsed: no new one means none came
        if self.cycle is cycle and not self.transport.is_closing():
            self.transport.close()


def server_options(head_timeout: float = HEAD_TIMEOUT) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.run` / `uvicorn.Config` for a server with these limits."""
    protocol = GuardedH11Protocol
    if head_timeout != HEAD_TIMEOUT:
        protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"head_timeout": head_timeout})
    return {
        "http": protocol,
        "timeout_keep_alive": KEEP_ALIVE,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }
