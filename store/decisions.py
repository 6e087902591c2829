"""The decisions log: every decision a decision node (or a person reviewing one) made.

One Redis Stream, ``P decisions``, capped at ``maxlen`` entries; each entry's field
``d`` is the JSON record (graph, node, thread, run, inputs, candidates, chosen,
confidence, model, prompt version, latency, tokens, attempts, method, and for human
decisions ``overrides``: the log id of the model decision they replaced). Entries are
appended, never changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis.asyncio as aredis
from redis.exceptions import ResponseError

from core import jsonutil
from core.errors import InvalidInput


class RedisDecisionLog:
    def __init__(self, client: aredis.Redis, *, prefix: str = "il:", maxlen: int = 100_000) -> None:
        self.client = client
        self.key = f"{prefix}decisions"
        self.maxlen = maxlen

    async def append(self, entry: Mapping[str, Any]) -> str:
        log_id: Any = await self.client.xadd(
            self.key, {"d": jsonutil.dumps(dict(entry))}, maxlen=self.maxlen, approximate=True
        )
        return str(log_id.decode())

    async def get(self, log_id: str) -> dict[str, Any] | None:
        try:
            found: Any = await self.client.xrange(self.key, log_id, log_id)
        except ResponseError:  # not a valid stream id: no such decision
            return None
        return _entry(*found[0]) if found else None

    async def search(
        self,
        *,
        graph_id: str | None = None,
        node: str | None = None,
        branch: str | None = None,
        method: str | None = None,
        thread_id: str | None = None,
        tenant: str = "default",
        limit: int = 50,
        before: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` is a log id to page from."""
        wanted = {
            "graph_id": graph_id,
            "node": node,
            "chosen": branch,
            "method": method,
            "thread_id": thread_id,
            "tenant": tenant,
        }
        wanted = {k: v for k, v in wanted.items() if v is not None}
        found: list[dict[str, Any]] = []
        high = f"({before}" if before else "+"
        while len(found) < limit:
            try:
                batch: Any = await self.client.xrevrange(self.key, high, "-", count=max(100, limit))
            except ResponseError:
                raise InvalidInput(
                    f"'before' must be a decision id like 1764000000000-0, got {before!r}"
                ) from None
            if not batch:
                break
            for raw_id, fields in batch:
                entry = _entry(raw_id, fields)
                if all(entry.get(k) == v for k, v in wanted.items()):
                    found.append(entry)
                    if len(found) == limit:
                        break
            high = f"({batch[-1][0].decode()}"
        return found


def _entry(raw_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    # Entries from before tenants belong to the default one.
    return {"id": raw_id.decode(), "tenant": "default", **jsonutil.loads(fields[b"d"])}
