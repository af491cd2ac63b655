"""The OpenAI-compatible server: a FastAPI app over one engine thread, and the chat page.

Endpoints: `/v1/models`, `/v1/completions`, `/v1/chat/completions` (JSON, or server-sent
events in OpenAI's chunk format ending with `data: [DONE]` when `stream` is true), `/health`
and the chat page at `/`. Every request becomes a job of the `EngineWorker`, so all requests
share the one engine's running batch (continuous batching).

Reasoning: a request may name a strategy in its body (`"reasoning": {"strategy": "sc", "k": 8}`)
or in the model name (`sft:sc@8`). `direct` is the model's own reply to the conversation, with
the request's sampling; any other strategy comes from `lmlab.reason`, answers the last user
message, runs in a thread whose engine calls join the same batch, and returns the final answer
as the message, with the compute spent (and the traces, on request) under `reasoning`.

Limits: at most `max_batch + max_queue` requests are held at once (then 429), `max_tokens` per
request, `timeout_s` per request (then 504); a streaming client that disconnects has its
generation cancelled and its slots freed before the next engine step. With `api_key` set,
`/v1/*` needs `Authorization: Bearer KEY`. Every error is OpenAI's JSON shape
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Depends, FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from lmlab.data.tokenizer import Message
from lmlab.infer.engine import Completion, Engine, GenerationError, SamplingParams
from lmlab.serve import schemas as S
from lmlab.serve.worker import FINAL, EngineWorker, Event, Job

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


@dataclass
class ServeConfig:
    """Limits and identity of a server."""

    name: str = "lmlab"
    """Model id clients send as `model` (strategy suffixes allowed: NAME:sc@8)."""
    max_queue: int = 64
    """Requests held beyond the engine's max_batch before new ones get 429."""
    max_tokens: int = 512
    """Most new tokens a request may ask for (and the default, within the context)."""
    timeout_s: float = 600.0
    """Seconds a request may take before it is cancelled (504)."""
    api_key: str | None = None
    """If set, /v1/* requires `Authorization: Bearer <api_key>`."""


class APIError(Exception):
    """An error answered in OpenAI's JSON shape."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type,
            param,
            code,
        )

    def response(self) -> JSONResponse:
        body = S.ErrorResponse(
            error=S.ErrorBody(
                message=self.message, type=self.type, param=self.param, code=self.code
            )
        )
        return JSONResponse(body.model_dump(), status_code=self.status)


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": S.ErrorResponse} for s in (400, 401, 404, 429, 500, 504)
}


# --- the app ----------------------------------------------------------------------------------


def create_app(engine: Engine, cfg: ServeConfig | None = None) -> FastAPI:
    """The server app over `engine` (its engine thread starts and stops with the app)."""
    cfg = cfg or ServeConfig()
    worker = EngineWorker(engine)
    state = _State(cfg, worker)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        worker.stop()

    app = FastAPI(
        title="lmlab",
        version="0.1.0",
        summary="OpenAI-compatible API over an lmlab model (continuous batching, reasoning).",
        lifespan=lifespan,
    )
    app.state.engine, app.state.worker, app.state.serve = engine, worker, state
    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """The schema without FastAPI's default 422 answers (bad input gets 400 here)."""
        if app.openapi_schema is None:
            for ops in base_openapi()["paths"].values():
                for op in ops.values():
                    op.get("responses", {}).pop("422", None)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(_JSONBody)
    _error_handlers(app)

    bearer = HTTPBearer(auto_error=False)

    async def check_key(
        creds: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if cfg.api_key is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials, cfg.api_key):
            raise APIError(
                401,
                "missing or invalid API key; send 'Authorization: Bearer KEY'",
                code="invalid_api_key",
            )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)], responses=ERRORS)

    @v1.get("/models", response_model=S.ModelList)
    async def list_models() -> S.ModelList:
        return S.ModelList(data=[S.Model(id=cfg.name, created=state.created)])

    @v1.get("/models/{model}", response_model=S.Model)
    async def get_model(model: str) -> S.Model:
        state.strategy_of(model, None)
        return S.Model(id=model, created=state.created)

    @v1.post("/chat/completions", response_model=S.ChatCompletion)
    async def chat_completions(body: S.ChatCompletionRequest, request: HTTPRequest) -> Any:
        return await state.chat(body, request)

    @v1.post("/completions", response_model=S.TextCompletion)
    async def completions(body: S.CompletionRequest, request: HTTPRequest) -> Any:
        return await state.complete(body, request)

    app.include_router(v1)

    @app.get("/health", response_model=S.Health)
    async def health() -> S.Health:
        return S.Health(
            model=cfg.name,
            strategies=state.strategies(),
            max_batch=engine.max_batch,
            running=worker.running(),
            waiting=worker.waiting(),
            pending=state.pending,
            max_pending=state.max_pending,
            steps=worker.steps,
            tokens=worker.tokens,
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: HTTPRequest, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: HTTPRequest, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if err.get("type") == "json_invalid":
            msg = f"the body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}"
            return APIError(400, msg, code="invalid_json").response()
        param = ".".join(loc) or None
        where = f"{param}: " if param else ""
        return APIError(400, f"{where}{err['msg']}", param=param, code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: HTTPRequest, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return APIError(e.status_code, str(e.detail), code=code).response()

    @app.exception_handler(Exception)
    async def crash(_: HTTPRequest, e: Exception) -> JSONResponse:
        return APIError(
            500, f"internal server error: {type(e).__name__}", type="server_error"
        ).response()


class _JSONBody:
    """Read /v1 POST bodies as JSON whatever their content type (`curl -d` sends a form type;
    OpenAI's API reads JSON regardless)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"].startswith("/v1/")
        ):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


class _EventStream(StreamingResponse):
    """Server-sent events that stop at once when the client disconnects, then `on_close`."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
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


def _sse(obj: BaseModel) -> str:
    return f"data: {obj.model_dump_json(exclude_none=True)}\n\n"


# --- request handling -------------------------------------------------------------------------


@dataclass
class _Prepared:
    prompts: list[list[int]]
    params: SamplingParams
    strategy: str
    reasoning: S.ReasoningOptions
    question: str | None = None


class _State:
    """What the handlers share: config, the worker, the pending-request count."""

    def __init__(self, cfg: ServeConfig, worker: EngineWorker) -> None:
        self.cfg, self.worker, self.engine = cfg, worker, worker.engine
        self.tok = self.engine.tokenizer
        self.pending = 0
        self.max_pending = self.engine.max_batch + cfg.max_queue
        self.created = int(time.time())
        self._strategies: list[str] | None = None

    # --- model names and strategies -------------------------------------------------------

    def strategies(self) -> list[str]:
        """`direct` and the strategies of `lmlab.reason` (looked up once)."""
        if self._strategies is None:
            try:
                from lmlab.reason.strategies import STRATEGIES
            except Exception:  # missing or broken: serve `direct` only (and say so on request)
                log.warning("lmlab.reason is not importable; only the direct strategy is served")
                STRATEGIES = {}
            self._strategies = ["direct", *(s for s in STRATEGIES if s != "direct")]
        return self._strategies

    def strategy_of(
        self, model: str, options: S.ReasoningOptions | None
    ) -> tuple[str, S.ReasoningOptions]:
        """The strategy a request asks for: its `reasoning` field over its model suffix."""
        name = self.cfg.name
        if model == name:
            suffix = ""
        elif model.startswith(name + ":"):
            suffix = model[len(name) + 1 :]
        else:
            raise APIError(
                404,
                f"model {model!r} does not exist; this server serves {name!r} "
                f"(optionally {name}:STRATEGY[@K])",
                param="model",
                code="model_not_found",
            )
        base, _, count = suffix.partition("@")
        opts = options or S.ReasoningOptions()
        fields = opts.model_fields_set
        if base and "strategy" not in fields:
            opts = opts.model_copy(update={"strategy": base})
        if count and "k" not in fields:
            if not count.isdigit() or not 1 <= int(count) <= 64:
                raise APIError(
                    400,
                    f"model suffix {suffix!r}: the number after @ must be an integer in [1, 64]",
                    param="model",
                    code="invalid_value",
                )
            opts = opts.model_copy(update={"k": int(count)})
        if opts.strategy not in self.strategies():
            raise APIError(
                400,
                f"strategy {opts.strategy!r} not available; this server has "
                f"{', '.join(self.strategies())}",
                param="reasoning.strategy",
                code="strategy_not_available",
            )
        return opts.strategy, opts

    # --- validation -----------------------------------------------------------------------

    def params(
        self,
        body: S._SamplingRequest,
        max_tokens: int | None,
        lens: list[int],
        param: str,
        logprobs: bool,
    ) -> SamplingParams:
        """Sampling parameters of a request, or a 400 naming the field at fault."""
        if body.presence_penalty or body.frequency_penalty:
            raise APIError(
                400,
                "presence_penalty and frequency_penalty are not supported; leave them at 0",
                param="presence_penalty",
                code="unsupported",
            )
        if max_tokens is not None and max_tokens > self.cfg.max_tokens:
            raise APIError(
                400,
                f"max_tokens={max_tokens} exceeds this server's limit of {self.cfg.max_tokens}",
                param="max_tokens",
                code="invalid_value",
            )
        limit, longest = self.engine.max_len, max(lens)
        if longest >= limit:
            raise APIError(
                400,
                f"the prompt ({longest} tokens) fills the model's context length "
                f"of {limit} tokens; shorten it",
                param=param,
                code="context_length_exceeded",
            )
        new = max_tokens if max_tokens is not None else min(self.cfg.max_tokens, limit - longest)
        if longest + new > limit:
            raise APIError(
                400,
                f"the prompt ({longest} tokens) + max_tokens ({new}) exceeds the "
                f"context length of {limit} tokens; shorten the prompt or lower "
                "max_tokens",
                param=param,
                code="context_length_exceeded",
            )
        stop = [body.stop] if isinstance(body.stop, str) else body.stop
        if stop is not None and len(stop) > 4:
            raise APIError(
                400,
                f"stop takes at most 4 strings, got {len(stop)}",
                param="stop",
                code="invalid_value",
            )
        params = SamplingParams(
            max_new_tokens=new,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k,
            min_p=body.min_p or 0.0,
            n=body.n or 1,
            stop=stop or None,
            seed=body.seed,
            logprobs=logprobs,
            ignore_eos=body.ignore_eos,
        )
        try:
            params.validate(self.engine.cfg.vocab_size, self.engine.max_batch)
        except GenerationError as e:
            field = re.split(r"[ =]", str(e), maxsplit=1)[0].replace("max_new_tokens", "max_tokens")
            raise APIError(400, str(e), param=field, code="invalid_value") from None
        return params

    def encode(self, fn: Callable[[], list[int]], param: str) -> list[int]:
        try:
            return fn()
        except GenerationError as e:
            raise APIError(400, str(e), param=param, code="invalid_value") from None
        except Exception as e:  # the tokenizer rejects text it cannot encode (lone surrogates)
            raise APIError(
                400, f"cannot tokenize {param}: {e}", param=param, code="invalid_value"
            ) from None

    def admit(self) -> None:
        if self.pending >= self.max_pending:
            raise APIError(
                429,
                f"the server is busy ({self.pending} requests held, limit "
                f"{self.max_pending}); retry later",
                type="rate_limit_error",
                code="queue_full",
            )
        self.pending += 1

    # --- chat -----------------------------------------------------------------------------

    def prepare_chat(self, body: S.ChatCompletionRequest) -> _Prepared:
        strategy, opts = self.strategy_of(body.model, body.reasoning)
        if body.top_logprobs:
            raise APIError(
                400,
                "top_logprobs > 0 is not supported (logprobs=true returns the "
                "chosen tokens' log-probabilities)",
                param="top_logprobs",
                code="unsupported",
            )
        messages: list[Message] = []
        for m in body.messages:
            content = (
                m.content
                if isinstance(m.content, str)
                else "".join(p.text for p in m.content or [])
            )
            role = "system" if m.role == "developer" else m.role
            messages.append({"role": role, "content": content})
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
        if strategy != "direct":
            if not (question or "").strip():
                raise APIError(
                    400,
                    f"strategy {strategy!r} answers the last user message; the conversation "
                    "has none",
                    param="messages",
                    code="invalid_value",
                )
            messages = [{"role": "user", "content": question or ""}]  # all a strategy reads
        ids = self.encode(
            lambda: self.tok.encode_chat(messages, add_generation_prompt=True)[0], "messages"
        )
        max_tokens = body.max_completion_tokens or body.max_tokens
        params = self.params(body, max_tokens, [len(ids)], "messages", bool(body.logprobs))
        return _Prepared([ids], params, strategy, opts, question)

    async def chat(self, body: S.ChatCompletionRequest, request: HTTPRequest) -> Any:
        prep = self.prepare_chat(body)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        self.admit()
        if prep.strategy != "direct":
            reasoning, answer, usage = await self.reason(
                prep, body.max_completion_tokens or body.max_tokens, body.seed
            )
            if body.stream:
                return self.reasoned_stream(rid, created, body, reasoning, answer, usage)
            return S.ChatCompletion(
                id=rid,
                created=created,
                model=body.model,
                usage=usage,
                reasoning=reasoning,
                choices=[
                    S.ChatChoice(
                        index=0, message=S.AssistantMessage(content=answer), finish_reason="stop"
                    )
                ],
            )
        job, events = self.start(prep, bool(body.stream))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _EventStream(
                self.chat_chunks(rid, created, body, prep, events, include_usage),
                on_close=lambda: self.worker.cancel(job),
            )
        done = await self.wait(job, events, request)
        if done is None:
            return Response(status_code=499)
        choices = [
            S.ChatChoice(
                index=i,
                message=S.AssistantMessage(content=c.text),
                finish_reason=c.finish_reason,
                logprobs=S.ChoiceLogprobs(content=self.token_logprobs(c, prep.params))
                if prep.params.logprobs
                else None,
            )
            for i, c in enumerate(done)
        ]
        return S.ChatCompletion(
            id=rid,
            created=created,
            model=body.model,
            choices=choices,
            usage=self.usage(prep.prompts, done, prep.params.n),
        )

    async def chat_chunks(
        self,
        rid: str,
        created: int,
        body: S.ChatCompletionRequest,
        prep: _Prepared,
        events: asyncio.Queue[list[Event]],
        include_usage: bool,
    ) -> AsyncIterator[str]:
        def chunk(choices: list[S.ChatChunkChoice], **kw: Any) -> str:
            return _sse(
                S.ChatCompletionChunk(
                    id=rid, created=created, model=body.model, choices=choices, **kw
                )
            )

        n = prep.params.n
        yield chunk(
            [
                S.ChatChunkChoice(index=i, delta=S.Delta(role="assistant", content=""))
                for i in range(n)
            ]
        )
        async for kind, a, b in self.events(events):
            if kind == "delta":
                yield chunk([S.ChatChunkChoice(index=a, delta=S.Delta(content=b))])
            elif kind == "finish":
                yield chunk([S.ChatChunkChoice(index=a, delta=S.Delta(), finish_reason=b)])
            elif kind == "done" and include_usage:
                yield chunk([], usage=self.usage(prep.prompts, a, n))
            elif kind == "error":
                yield f"data: {_error_json(a, b)}\n\n"
        yield "data: [DONE]\n\n"

    def reasoned_stream(
        self,
        rid: str,
        created: int,
        body: S.ChatCompletionRequest,
        reasoning: S.Reasoning,
        answer: str,
        usage: S.Usage,
    ) -> StreamingResponse:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def chunks() -> AsyncIterator[str]:
            def chunk(choices: list[S.ChatChunkChoice], **kw: Any) -> str:
                return _sse(
                    S.ChatCompletionChunk(
                        id=rid, created=created, model=body.model, choices=choices, **kw
                    )
                )

            yield chunk(
                [S.ChatChunkChoice(index=0, delta=S.Delta(role="assistant", content=answer))]
            )
            yield chunk(
                [S.ChatChunkChoice(index=0, delta=S.Delta(), finish_reason="stop")],
                reasoning=reasoning,
            )
            if include_usage:
                yield chunk([], usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    # --- completions ----------------------------------------------------------------------

    async def complete(self, body: S.CompletionRequest, request: HTTPRequest) -> Any:
        strategy, opts = self.strategy_of(body.model, body.reasoning)
        if body.echo:
            raise APIError(400, "echo is not supported", param="echo", code="unsupported")
        if body.logprobs:
            raise APIError(
                400,
                "logprobs > 0 (top alternatives) is not supported; logprobs=0 "
                "returns the chosen tokens' log-probabilities",
                param="logprobs",
                code="unsupported",
            )
        raw = body.prompt
        items: list[Any] = (
            [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        )
        if not items:
            raise APIError(
                400,
                "prompt is empty; give a string, strings or token ids",
                param="prompt",
                code="invalid_value",
            )
        if len(items) > 64:
            raise APIError(
                400,
                f"at most 64 prompts per request, got {len(items)}",
                param="prompt",
                code="invalid_value",
            )
        if strategy != "direct" and (
            len(items) != 1 or not isinstance(items[0], str) or not items[0].strip()
        ):
            raise APIError(
                400,
                f"strategy {strategy!r} answers one text prompt",
                param="prompt",
                code="invalid_value",
            )
        prompts = [self.encode(lambda p=p: self.engine.encode_prompt(p), "prompt") for p in items]
        params = self.params(
            body, body.max_tokens, [len(p) for p in prompts], "prompt", body.logprobs is not None
        )
        prep = _Prepared(
            prompts, params, strategy, opts, items[0] if isinstance(items[0], str) else None
        )
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        self.admit()
        if strategy != "direct":
            reasoning, answer, usage = await self.reason(prep, body.max_tokens, body.seed)
            choice = S.CompletionChoice(index=0, text=answer, finish_reason="stop")
            obj = S.TextCompletion(
                id=rid,
                created=created,
                model=body.model,
                choices=[choice],
                usage=usage,
                reasoning=reasoning,
            )
            if body.stream:
                return StreamingResponse(
                    iter([_sse(obj), "data: [DONE]\n\n"]), media_type="text/event-stream"
                )
            return obj
        job, events = self.start(prep, bool(body.stream))
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _EventStream(
                self.text_chunks(rid, created, body, prep, events, include_usage),
                on_close=lambda: self.worker.cancel(job),
            )
        done = await self.wait(job, events, request)
        if done is None:
            return Response(status_code=499)
        choices = [
            S.CompletionChoice(
                index=i,
                text=c.text,
                finish_reason=c.finish_reason,
                logprobs=self.text_logprobs(c, params) if params.logprobs else None,
            )
            for i, c in enumerate(done)
        ]
        return S.TextCompletion(
            id=rid,
            created=created,
            model=body.model,
            choices=choices,
            usage=self.usage(prompts, done, params.n),
        )

    async def text_chunks(
        self,
        rid: str,
        created: int,
        body: S.CompletionRequest,
        prep: _Prepared,
        events: asyncio.Queue[list[Event]],
        include_usage: bool,
    ) -> AsyncIterator[str]:
        def chunk(choices: list[S.CompletionChoice], **kw: Any) -> str:
            return _sse(
                S.TextCompletion(id=rid, created=created, model=body.model, choices=choices, **kw)
            )

        async for kind, a, b in self.events(events):
            if kind == "delta":
                yield chunk([S.CompletionChoice(index=a, text=b, finish_reason=None)])
            elif kind == "finish":
                yield chunk([S.CompletionChoice(index=a, text="", finish_reason=b)])
            elif kind == "done" and include_usage:
                yield chunk([], usage=self.usage(prep.prompts, a, prep.params.n))
            elif kind == "error":
                yield f"data: {_error_json(a, b)}\n\n"
        yield "data: [DONE]\n\n"

    # --- jobs -----------------------------------------------------------------------------

    def start(self, prep: _Prepared, stream: bool) -> tuple[Job, asyncio.Queue[list[Event]]]:
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

    async def events(self, events: asyncio.Queue[list[Event]]) -> AsyncIterator[Event]:
        """A job's events until its final one, or an error event once its time is up."""
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            try:
                batch = await asyncio.wait_for(events.get(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                yield ("error", f"the request took longer than {self.cfg.timeout_s:g} s", 504)
                return
            for ev in batch:
                yield ev
                if ev[0] in FINAL:
                    return

    async def wait(
        self, job: Job, events: asyncio.Queue[list[Event]], request: HTTPRequest
    ) -> list[Completion] | None:
        """The completions of a non-streaming job (None if its client went away)."""
        deadline = time.monotonic() + self.cfg.timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.worker.cancel(job)
                raise APIError(
                    504,
                    f"the request took longer than {self.cfg.timeout_s:g} s",
                    type="timeout",
                    code="timeout",
                )
            try:
                batch = await asyncio.wait_for(events.get(), min(left, 0.5))
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    self.worker.cancel(job)
                    return None
                continue
            for kind, value, status in batch:
                if kind == "done":
                    return value
                if kind == "error":
                    raise APIError(
                        status,
                        value,
                        type="server_error" if status >= 500 else "invalid_request_error",
                    )
                if kind == "cancelled":
                    return None

    async def reason(
        self, prep: _Prepared, max_tokens: int | None, seed: int | None
    ) -> tuple[S.Reasoning, str, S.Usage]:
        """Run a `lmlab.reason` strategy on the question in a thread (its engine calls join the
        running batch); returns the reasoning record, the answer text and the usage."""
        from lmlab.reason.base import ReasonError
        from lmlab.reason.strategies import parse_strategy

        opts = prep.reasoning
        settings = {k: v for k, v in (opts.model_extra or {}).items()}
        settings.update(max_new_tokens=max_tokens, seed=seed)
        spec = prep.strategy + (f"@{opts.k}" if opts.k is not None else "")
        proxy = _WorkerEngine(self.worker)
        try:
            try:
                strategy = parse_strategy(spec, **settings)
                result = (
                    await asyncio.wait_for(
                        asyncio.to_thread(strategy.run, proxy, [prep.question]),
                        self.cfg.timeout_s,
                    )
                )[0]
            except (ReasonError, GenerationError, TypeError) as e:
                raise APIError(
                    400, f"reasoning: {e}", param="reasoning", code="invalid_value"
                ) from None
            except asyncio.TimeoutError:
                raise APIError(
                    504,
                    f"the request took longer than {self.cfg.timeout_s:g} s",
                    type="timeout",
                    code="timeout",
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
            info=_jsonable(result.info) if opts.return_traces else None,
        )
        usage = S.Usage(
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.tokens,
            total_tokens=c.prompt_tokens + c.tokens,
        )
        return reasoning, result.answer or "", usage

    # --- response parts -------------------------------------------------------------------

    @staticmethod
    def usage(prompts: list[list[int]], done: list[Completion], n: int) -> S.Usage:
        p = sum(len(x) for x in prompts)
        c = sum(len(x.token_ids) for x in done)
        return S.Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)

    def _reported(self, c: Completion, params: SamplingParams) -> tuple[list[int], list[float]]:
        """Token ids and logprobs of a completion's text (without its final stop token)."""
        ids, lps = c.token_ids, c.logprobs or []
        stops = set(params.stop_token_ids or [])
        if not params.ignore_eos:
            stops.add(self.tok.end_id)
        if c.finish_reason == "stop" and ids and ids[-1] in stops:
            ids, lps = ids[:-1], lps[:-1]
        return ids, lps

    def token_logprobs(self, c: Completion, params: SamplingParams) -> list[S.TokenLogprob]:
        ids, lps = self._reported(c, params)
        out = []
        for t, lp in zip(ids, lps, strict=True):
            s = self.tok.decode([t])
            out.append(S.TokenLogprob(token=s, logprob=lp, bytes=list(s.encode())))
        return out

    def text_logprobs(self, c: Completion, params: SamplingParams) -> S.CompletionLogprobs:
        ids, lps = self._reported(c, params)
        tokens = [self.tok.decode([t]) for t in ids]
        offsets, pos = [], 0
        for s in tokens:
            offsets.append(pos)
            pos += len(s)
        return S.CompletionLogprobs(tokens=tokens, token_logprobs=lps, text_offset=offsets)


class _WorkerEngine:
    """The engine as `lmlab.reason` strategies see it, generating through the engine thread."""

    def __init__(self, worker: EngineWorker) -> None:
        self.worker = worker
        self.tokenizer = worker.engine.tokenizer
        self.max_len = worker.engine.max_len
        self.max_batch = worker.engine.max_batch
        self.cfg = worker.engine.cfg

    def generate(self, prompts: Any, params: SamplingParams) -> list[list[Completion]]:
        return self.worker.generate(prompts, params)


def _error_json(message: str, status: int) -> str:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return json.dumps(
        {
            "error": {
                "message": message,
                "type": kind,
                "param": None,
                "code": "timeout" if status == 504 else None,
            }
        }
    )


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
