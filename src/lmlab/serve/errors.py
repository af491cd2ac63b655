"""Errors in OpenAI's JSON shape `{"error": {"message", "type", "param", "code"}}`, for every
way a request can fail: our own checks, pydantic's validation, unknown paths and methods, a job's
error event, and bugs (500 without a traceback)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmlab.serve import schemas as S

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": S.ErrorResponse} for s in (400, 401, 404, 429, 500, 504)
}
"""The error answers every /v1 operation documents."""


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


def event_error(message: str, status: int) -> APIError:
    """The answer to a job's ("error", message, status) event; 504 is the request's timeout."""
    if status == 504:
        return APIError(504, message, type="timeout", code="timeout")
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return APIError(status, message, type=kind)


def stream_error(message: str, status: int) -> str:
    """A job's error event as a server-sent event (a stream's HTTP status is already sent)."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    code = "timeout" if status == 504 else None
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return f"data: {json.dumps(body)}\n\n"


def install_handlers(app: FastAPI) -> None:
    """Answer every exception in OpenAI's shape (pydantic's 422 becomes a 400 naming the field)."""

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
