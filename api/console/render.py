"""Rendering console pages: the Jinja2 environment, its filters (times, durations,
ids), the headers every page gets, and error pages (the console answers errors in HTML,
where the JSON API answers them in JSON)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from fastapi import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from api.auth import ROLE_ACCESS, Access, Principal
from api.console.session import COOKIE, Session

HERE = Path(__file__).parent
STATIC = HERE / "static"

HEADERS = {
    # Everything the console loads comes from the service itself: no CDN, no inline code.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _asset_version() -> str:
    """Changes whenever a static file does, so browsers never keep a stale stylesheet."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _when(value: str | int | float | None) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    return datetime.fromisoformat(value)


def span(seconds: float) -> str:
    """A duration the way people say it: 850 ms, 4.2 s, 3 min, 2 h 5 min, 3 days."""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        hours, rest = divmod(seconds, 3600)
        return f"{hours:.0f} h {rest // 60:.0f} min" if rest >= 60 else f"{hours:.0f} h"
    days = seconds / 86400
    return f"{days:.0f} day{'s' if round(days) != 1 else ''}"


def ago(value: str | int | float | None) -> str:
    when = _when(value)
    if when is None:
        return "—"
    delta = (datetime.now(UTC) - when).total_seconds()
    if -5 < delta < 5:
        return "just now"
    return f"{span(delta)} ago" if delta > 0 else f"in {span(delta)}"


def until(value: str | int | float | None) -> str:
    """A deadline relative to now: ``in 5 min`` or ``5 min overdue``."""
    when = _when(value)
    if when is None:
        return "no deadline"
    delta = (when - datetime.now(UTC)).total_seconds()
    return f"in {span(delta)}" if delta >= 0 else f"{span(delta)} overdue"


def soon(value: str | int | float | None) -> bool:
    """Whether a deadline is less than an hour away."""
    when = _when(value)
    return when is not None and (when - datetime.now(UTC)).total_seconds() < 3600


def stamp(value: str | int | float | None) -> str:
    when = _when(value)
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "—"


def duration_ms(value: float | int | None) -> str:
    return "—" if value is None else span(value / 1000)


def short(value: str | None, n: int = 8) -> str:
    """The end of an id: our ids are time-ordered, so their beginnings look alike."""
    return (value or "")[-n:]


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ago=ago,
        until=until,
        soon=soon,
        stamp=stamp,
        duration_ms=duration_ms,
        span=span,
        short=short,
        pretty=pretty,
        percent=percent,
        urlquote=lambda v: quote(str(v), safe=""),
    )
    env.globals["asset_version"] = _asset_version()
    return env


ENV = _env()


def session_of(request: Request) -> Session | None:
    return Session.parse(request.cookies.get(COOKIE))


def page(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    principal: Principal | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A console page; with ``principal``, the header says who is logged in."""
    session = session_of(request)
    html = ENV.get_template(template).render(
        request_path=request.url.path,
        principal=principal,
        can_answer=principal is not None and principal.can(Access.ANSWER),
        role=_role(principal),
        csrf=session.csrf if session else "",
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _role(principal: Principal | None) -> str:
    """The highest role a key has (what it may do)."""
    if principal is None:
        return ""
    return max(principal.roles, key=lambda r: ROLE_ACCESS.get(r, Access.READ))


TITLES = {
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    409: "Already decided",
    413: "Too large",
    422: "Not accepted",
    503: "Storage unavailable",
}


def error_page(request: Request, status: int, message: str) -> Response:
    """An error as a console page; a missing or expired login goes to the login form."""
    if status == 401:
        target = request.url.path if request.method == "GET" else "/console"
        return RedirectResponse(f"/console/login?next={quote(target, safe='/')}", status_code=303)
    principal: Principal | None = getattr(request.state, "principal", None)
    return page(
        request,
        "error.html",
        {"status": status, "title": TITLES.get(status, "Something went wrong"), "message": message},
        principal=principal,
        status=status,
    )
