"""Run-completion webhooks: signed POSTs of ended runs, delivered at least once.

A run created with ``webhook`` gets its delivery recorded in the same atomic step as its
outcome (``store/runs_lua.py``), so nothing is lost between the two. ``WebhookSender``
— one per process that runs workers — takes deliveries from the Redis stream (blocking
``XREADGROUP``), POSTs them, and retries connect errors, timeouts, 429 and 5xx with
exponential backoff and jitter through a due-time schedule in Redis (read when due, no
polling). Other 4xx answers are final. Deliveries of a process that died are taken over by
any other (``store/webhooks.py``).

Every request carries::

    X-Interlock-Event: run.completed
    X-Interlock-Delivery: <delivery id>     # the run id: the same on every retry
    X-Interlock-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

``verify_signature`` checks the last one the way a receiver should.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit

import httpx

from core import jsonutil
from core.ids import new_id, now_ms
from store.webhooks import Delivery, WebhookStore

log = logging.getLogger("interlock.webhooks")

EVENT = "run.completed"
SIGNATURE_HEADER = "X-Interlock-Signature"
EVENT_HEADER = "X-Interlock-Event"
DELIVERY_HEADER = "X-Interlock-Delivery"


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``X-Interlock-Signature`` value for ``body`` sent at ``timestamp`` (unix s)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(
    secret: str, header: str | None, body: bytes, tolerance_s: float = 300, *, now: float | None = None
) -> bool:
    """Whether ``header`` (an ``X-Interlock-Signature`` value) signs ``body`` with
    ``secret`` and was made within ``tolerance_s`` of ``now``. Use the raw body bytes as
    received, before any JSON parsing. A stale timestamp is refused, so a captured request
    cannot be replayed later; drop duplicates within the window by ``X-Interlock-Delivery``.
    """
    if not header:
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    try:
        t = int(parts["t"][0])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, v) for v in parts.get("v1", []))


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Delay before attempt ``attempt + 1``: exponential, capped, with jitter (the upper
    half of the range is random), so receivers coming back are not hit all at once."""
    ceiling = min(max_s, base_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def redacted(url: str) -> str:
    """The URL without its query or user info, which may hold a receiver's token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


@dataclass(frozen=True)
class Attempt:
    """What one POST came to."""

    result: Literal["delivered", "retry", "failed"]
    error: str = ""
    retry_after_s: float | None = None


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


class WebhookSender:
    """Delivers webhooks from Redis. Any number of senders, in any processes, share the
    work; each delivery is owned by one of them at a time (by lease)."""

    def __init__(
        self,
        store: WebhookStore,
        secret: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 10,
        base_delay_s: float = 1.0,
        max_delay_s: float = 300.0,
        lease_ms: int = 30_000,
        concurrency: int = 16,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.secret = secret
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        # Never taken over while an attempt may still be under way.
        self.lease_ms = max(lease_ms, int(timeout_s * 1000) + 1000)
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-webhooks-{new_id()[-8:]}"
        self._http = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._tasks: dict[asyncio.Task[None], Delivery] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._inbox(), name=f"webhooks inbox {self.name}"),
            asyncio.create_task(self._schedule(), name=f"webhooks schedule {self.name}"),
        ]

    async def stop(self) -> None:
        """Stop at once; deliveries under way are handed back for another process."""
        # The loops also check the flag: on Python 3.11 an asyncio.wait_for whose inner
        # future finishes as the cancellation arrives swallows it (redis-py's socket writes
        # used one), and a loop would go on.
        self._stopping = True
        for task in self._loops:
            task.cancel()
        left = dict(self._tasks)
        for task in left:
            task.cancel()
        await asyncio.gather(*self._loops, *left, return_exceptions=True)
        if left:
            with contextlib.suppress(Exception):
                await self.store.hand_back(self.name, list(left.values()), self.lease_ms)
        await self._http.aclose()

    def _free(self) -> int:
        return self.concurrency - len(self._tasks)

    def _spawn(self, d: Delivery) -> None:
        if any(d.delivery_id == other.delivery_id for other in self._tasks.values()):
            return  # already under way here (a reclaim saw our own long attempt)
        task = asyncio.create_task(self._deliver(d), name=f"webhook {d.delivery_id}")
        self._tasks[task] = d
        task.add_done_callback(lambda t: self._tasks.pop(t, None))

    async def _inbox(self) -> None:
        """New deliveries, as runs end."""
        await self.store.setup()
        while not self._stopping:
            if self._free() <= 0:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                for d in await self.store.read(self.name, self._free(), block_ms=5_000):
                    self._spawn(d)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading webhook deliveries failed; retrying in 1 s")
                await asyncio.sleep(1)

    async def _schedule(self) -> None:
        """Retries when they are due, and deliveries whose process died. Sleeps until the
        earliest due time (or a retry scheduled here), at most a third of the lease, which
        bounds how long another process's orphaned work waits."""
        period_ms = self.lease_ms // 3
        await self.store.setup()
        next_reclaim = 0
        while not self._stopping:
            if self._free() <= 0:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            wake_at = now_ms() + period_ms
            try:
                if now_ms() >= next_reclaim:
                    next_reclaim = now_ms() + period_ms
                    for d in await self.store.reclaim(self.name, self.lease_ms, self._free()):
                        log.warning("webhook %s: taken over from a silent process", d.delivery_id)
                        self._spawn(d)
                claimed, next_due = await self.store.claim_due(
                    f"{self.name}:{new_id()}", self._free(), self.lease_ms
                )
                for d in claimed:
                    self._spawn(d)
                wake_at = min(next_reclaim, next_due if next_due is not None else next_reclaim)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook schedule failed; trying again in %d ms", period_ms)
            delay = max(0, wake_at - now_ms()) / 1000
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            self._wake.clear()

    async def _deliver(self, d: Delivery) -> None:
        attempts = d.attempts + 1
        try:
            attempt = await self._post(d)
            if attempt.result == "delivered":
                await self.store.settle(d, self.name, "delivered", attempts, "")
                return
            if attempt.result == "retry" and attempts < self.max_attempts:
                delay = backoff_s(attempts, self.base_delay_s, self.max_delay_s)
                if attempt.retry_after_s is not None:
                    delay = max(delay, min(attempt.retry_after_s, self.max_delay_s))
                due = now_ms() + int(delay * 1000)
                if await self.store.reschedule(d, self.name, due, attempts, attempt.error):
                    log.info(
                        "webhook %s to %s: %s; attempt %d in %.1f s",
                        d.delivery_id, redacted(d.url), attempt.error, attempts + 1, delay,
                    )  # fmt: skip
                    self._wake.set()
                return
            await self.store.settle(d, self.name, "failed", attempts, attempt.error)
            log.warning(
                "webhook %s to %s given up after %d attempt(s): %s",
                d.delivery_id, redacted(d.url), attempts, attempt.error,
            )  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception:
            # Redis is unavailable: the delivery keeps its lease and is retried after it.
            log.exception("webhook %s: recording the attempt failed", d.delivery_id)

    async def _post(self, d: Delivery) -> Attempt:
        body = jsonutil.dumps({**d.body, "webhook_sent_at": datetime.now(UTC).isoformat()})
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Interlock-Webhooks/1",
            EVENT_HEADER: str(d.body.get("event", EVENT)),
            DELIVERY_HEADER: d.delivery_id,
            SIGNATURE_HEADER: sign(self.secret, body),
        }
        try:
            response = await self._http.post(d.url, content=body, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:  # trying again cannot help
            return Attempt("failed", f"{type(e).__name__}: {e}"[:300])
        except httpx.TimeoutException:
            return Attempt("retry", f"timed out after {self.timeout_s} s")
        except httpx.TransportError as e:  # refused, reset, DNS…: the receiver may come back
            return Attempt("retry", f"{type(e).__name__}: {e}"[:300])
        code = response.status_code
        if 200 <= code < 300:
            return Attempt("delivered")
        error = f"HTTP {code}"
        if code == 429 or code >= 500:
            return Attempt("retry", error, _retry_after(response))
        return Attempt("failed", error + (" (redirects are not followed)" if 300 <= code < 400 else ""))
