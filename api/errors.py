"""The one place errors become HTTP responses: a JSON body ``{"detail": …, "error": …}``
with a message a person can act on, and the right status. Under ``/console`` the same
errors are pages (and a missing login is a redirect to the login form)."""

from __future__ import annotations

import logging

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from api.console.render import error_page
from api.console.session import is_console
from api.responses import JSONResponse
from core.errors import (
    Conflict,
    Forbidden,
    InterlockError,
    InvalidInput,
    NotFound,
    TransientError,
    Unauthenticated,
)

log = logging.getLogger("interlock.api")

_STATUS: list[tuple[type[InterlockError], int]] = [
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 422),
    (TransientError, 503),
]


def error_response(status: int, error: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InterlockError)
    async def interlock_error(request: Request, exc: InterlockError) -> Response:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        if status == 500:
            log.error("unmapped error: %s", exc)
        if is_console(request.url.path):
            return error_page(request, status, exc.message)
        response = error_response(status, type(exc).__name__, exc.message)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="interlock"'
        return response

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    @app.exception_handler(redis.BusyLoadingError)
    async def redis_error(request: Request, exc: redis.RedisError) -> Response:
        log.warning("redis error: %s", exc)
        if is_console(request.url.path):
            return error_page(request, 503, f"storage is unavailable ({exc}); retry shortly")
        return error_response(503, "RedisUnavailable", f"storage is unavailable ({exc}); retry shortly")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                problems.append(f"body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})")
            else:
                problems.append(f"{_location(tuple(err.get('loc', ())))}: {err.get('msg')}")
        if is_console(request.url.path):
            return error_page(request, 422, "; ".join(problems))
        return error_response(422, "ValidationError", "; ".join(problems))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_console(request.url.path):
            return error_page(request, exc.status_code, str(exc.detail))
        return error_response(exc.status_code, "HTTPError", str(exc.detail))
