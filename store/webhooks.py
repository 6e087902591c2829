"""Webhook deliveries on Redis: the inbox the run scripts write to, the retry schedule,
the signing secret. ``runs/webhooks.py`` sends them; keys in ``store/layout.py``.

A delivery is born in the same Lua step that records its run's outcome (``NOTIFY_FN`` in
``store/runs_lua.py``): an entry of the ``P webhooks`` stream holding a snapshot of the
run. Its first attempt is made by whoever reads it through the consumer group; a process
that dies during that attempt leaves it pending, and another takes it over
(``XAUTOCLAIM``) once it has been idle longer than the lease. An attempt that failed in a
way worth retrying moves the delivery, atomically, from the stream to the retry schedule:
a hash ``P webhook:<id>`` (url, body, attempts) and its due time in the sorted set
``P webhooks:due``. Claiming a due retry pushes its due time one lease ahead, so a
process that dies during a retry only delays it. Every result is written only by the
attempt that still owns the delivery (the stream entry's consumer, or the claim token).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aredis

from core import jsonutil
from core.ids import now_ms
from store.layout import WEBHOOK_GROUP, Layout

SECRET_PREFIX = "whsec_"
"""Every generated signing secret starts with this, so people and scanners recognise one."""

# The attempt that settles a delivery must still own it: the stream entry's consumer (a
# first attempt) or the claim token (a retry). ARGV[1..5]: group, entry_id ('' for a retry),
# consumer, token, delivery_id.
_OWNED = """
local function owned(stream)
  if ARGV[2] ~= '' then
    local p = redis.call('XPENDING', stream, ARGV[1], ARGV[2], ARGV[2], 1)
    return #p > 0 and p[1][2] == ARGV[3]
  end
  return redis.call('HGET', KEYS[3], 'owner') == ARGV[4]
end
"""

# KEYS: stream, due, delivery hash, run. ARGV: (see _OWNED), status, attempts, error.
# The delivery is over (delivered, or given up): forget it; note the result on the run
# record while the run exists (a stateless run's may be gone). Returns 1, or 0 when the
# caller no longer owns the delivery (nothing written).
_SETTLE = (
    _OWNED
    + """
if not owned(KEYS[1]) then return 0 end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
redis.call('ZREM', KEYS[2], ARGV[5])
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'webhook_status', ARGV[6], 'webhook_attempts', ARGV[7])
  if ARGV[8] == '' then redis.call('HDEL', KEYS[4], 'webhook_error')
  else redis.call('HSET', KEYS[4], 'webhook_error', ARGV[8]) end
end
return 1
"""
)

# KEYS: stream, due, delivery hash, run.
# ARGV: (see _OWNED), due_ms, attempts, error, url, thread_id, run_id, body_json.
# Schedule the next attempt (a first attempt moves from the stream to the schedule).
_RESCHEDULE = (
    _OWNED
    + """
if not owned(KEYS[1]) then return 0 end
if ARGV[2] ~= '' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[3], 'url', ARGV[9], 't', ARGV[10], 'r', ARGV[11], 'body', ARGV[12])
end
redis.call('HSET', KEYS[3], 'attempts', ARGV[7])
redis.call('HDEL', KEYS[3], 'owner')
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('HSET', KEYS[4], 'webhook_status', 'retrying', 'webhook_attempts', ARGV[7],
    'webhook_error', ARGV[8])
end
return 1
"""
)

# KEYS: due. ARGV: now, count, lease_until, token, delivery_key_prefix.
# Take up to count due retries: each one's due time moves to lease_until (so it comes due
# again if its taker dies) and its hash notes the claim token. Returns
# {{id, url, thread_id, run_id, body, attempts}…}, and the earliest due time left.
_CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  local f = redis.call('HMGET', key, 'url', 't', 'r', 'body', 'attempts')
  if not f[1] then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    redis.call('HSET', key, 'owner', ARGV[4])
    out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5]}
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {out, first[2] or false}
"""

DeliveryStatus = Literal["pending", "retrying", "delivered", "failed"]


@dataclass(frozen=True)
class Delivery:
    """One run-completion webhook to send. Its id is the run's id (a run ends once), so
    every attempt carries the same id and receivers can drop duplicates."""

    delivery_id: str
    url: str
    thread_id: str
    run_id: str
    body: dict[str, Any]
    """The run as the protocol shows it, with its final ``values`` and ``error``."""
    attempts: int = 0
    """Attempts made before this one."""
    entry_id: str | None = None
    """A first attempt: its entry in the webhooks stream."""
    token: str | None = None
    """A retry: the claim that holds its lease."""


def _iso(ms: bytes | str) -> str:
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat()


def _text(value: bytes) -> str:
    return value.decode()


def run_body(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The webhook body of a stream entry written by ``NOTIFY_FN``: the run as
    ``GET /threads/{t}/runs/{r}`` shows it, plus ``values`` and ``error`` (and the pending
    ``interrupts`` of a run that paused on one)."""
    end = jsonutil.loads(fields[b"e"]) if fields.get(b"e") else {}
    body: dict[str, Any] = {
        "run_id": _text(fields[b"r"]),
        "thread_id": _text(fields[b"t"]),
        "assistant_id": _text(fields[b"a"]),
        "created_at": _iso(fields[b"c"]),
        "updated_at": _iso(fields[b"u"]),
        "status": _text(fields[b"status"]),
        "metadata": jsonutil.loads(fields[b"m"]),
        "multitask_strategy": _text(fields[b"s"]) or None,
        "kwargs": jsonutil.loads(fields[b"k"]),
        "values": jsonutil.loads(fields[b"v"]) if fields.get(b"v") else None,
        "error": end.get("error"),
    }
    if end.get("interrupts"):
        body["interrupts"] = end["interrupts"]
    return body


def _from_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Delivery:
    if b"body" in fields:
        # Any other event (approvals: requested, reminder, escalated): a ready body.
        return Delivery(
            delivery_id=_text(fields[b"id"]),
            url=_text(fields[b"url"]),
            thread_id=_text(fields[b"t"]),
            run_id="",
            body=jsonutil.loads(fields[b"body"]),
            entry_id=entry_id.decode(),
        )
    run_id = _text(fields[b"r"])
    return Delivery(
        delivery_id=run_id,
        url=_text(fields[b"url"]),
        thread_id=_text(fields[b"t"]),
        run_id=run_id,
        body=run_body(fields),
        entry_id=entry_id.decode(),
    )


class WebhookStore:
    """The webhook inbox stream, the retry schedule and the signing secret."""

    def __init__(self, client: aredis.Redis, *, prefix: str = "il:") -> None:
        self.client = client
        self.keys = Layout(prefix)
        self._settle = client.register_script(_SETTLE)
        self._reschedule = client.register_script(_RESCHEDULE)
        self._claim_due = client.register_script(_CLAIM_DUE)

    async def setup(self) -> None:
        """Create the stream's consumer group (idempotent)."""
        try:
            await self.client.xgroup_create(self.keys.webhooks, WEBHOOK_GROUP, id="0", mkstream=True)
        except aredis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    async def secret(self) -> str:
        """The signing secret kept in Redis, made at first use and shared by every process."""
        key = self.keys.webhook_secret
        await self.client.set(key, SECRET_PREFIX + secrets.token_hex(32), nx=True)
        value: Any = await self.client.get(key)
        return str(value.decode())

    async def read(self, consumer: str, count: int, *, block_ms: int) -> list[Delivery]:
        """Take up to ``count`` new deliveries, blocking up to ``block_ms`` for the first."""
        reply: Any = await self.client.xreadgroup(
            WEBHOOK_GROUP, consumer, {self.keys.webhooks: ">"}, count=count, block=block_ms
        )
        if not reply:
            return []
        return [_from_entry(mid, fields) for mid, fields in reply[0][1] if fields]

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Delivery]:
        """Take over first attempts whose process has been silent for ``min_idle_ms``."""
        reply: Any = await self.client.xautoclaim(
            self.keys.webhooks, WEBHOOK_GROUP, consumer, min_idle_ms, "0-0", count=count
        )
        entries = reply[1] if reply else []
        return [_from_entry(mid, fields) for mid, fields in entries if fields]

    async def claim_due(self, token: str, count: int, lease_ms: int) -> tuple[list[Delivery], int | None]:
        """Take up to ``count`` retries that are due, holding each for ``lease_ms``.
        Returns them and the earliest due time left (ms), or None when none is left."""
        now = now_ms()
        claimed, first = await self._claim_due(
            keys=[self.keys.webhooks_due],
            args=[now, count, now + lease_ms, token, self.keys.webhook("")],
        )
        deliveries = [
            Delivery(
                delivery_id=_text(did),
                url=_text(url),
                thread_id=_text(tid),
                run_id=_text(rid),
                body=jsonutil.loads(body),
                attempts=int(attempts or 0),
                token=token,
            )
            for did, url, tid, rid, body, attempts in claimed
        ]
        return deliveries, int(float(first)) if first is not None else None

    def _keys_of(self, d: Delivery) -> list[str]:
        k = self.keys
        return [k.webhooks, k.webhooks_due, k.webhook(d.delivery_id), k.run(d.thread_id, d.run_id)]

    def _owner_args(self, d: Delivery, consumer: str) -> list[str]:
        return [WEBHOOK_GROUP, d.entry_id or "", consumer, d.token or "", d.delivery_id]

    async def settle(
        self, d: Delivery, consumer: str, status: Literal["delivered", "failed"], attempts: int, error: str
    ) -> bool:
        """The delivery is over: forget it and note the result on the run. False (nothing
        written) when another process owns it now."""
        done = await self._settle(
            keys=self._keys_of(d), args=[*self._owner_args(d, consumer), status, attempts, error]
        )
        return bool(done)

    async def reschedule(self, d: Delivery, consumer: str, due_ms: int, attempts: int, error: str) -> bool:
        """Schedule the next attempt at ``due_ms``. False (nothing written) when another
        process owns the delivery now."""
        done = await self._reschedule(
            keys=self._keys_of(d),
            args=[
                *self._owner_args(d, consumer), due_ms, attempts, error, d.url, d.thread_id, d.run_id,
                jsonutil.dumps(d.body),
            ],
        )  # fmt: skip
        return bool(done)

    async def hand_back(self, consumer: str, deliveries: Sequence[Delivery], lease_ms: int) -> None:
        """Give up deliveries at shutdown so another process takes them at once: first
        attempts are marked idle past the lease, retries become due now."""
        entries: list[Any] = [d.entry_id for d in deliveries if d.entry_id]
        retries = [d.delivery_id for d in deliveries if d.token]
        pipe = self.client.pipeline(transaction=False)
        if entries:
            pipe.xclaim(
                self.keys.webhooks, WEBHOOK_GROUP, consumer, 0, entries, idle=lease_ms + 1, justid=True
            )
        if retries:
            pipe.zadd(self.keys.webhooks_due, dict.fromkeys(retries, now_ms()), xx=True)
        await pipe.execute()
