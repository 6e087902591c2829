"""Assistants created over the API (the per-graph defaults are virtual: ``api/routes``).

An assistant is a graph plus the config, context and metadata its runs start from; every
change makes a new version, and any version can be made the current one again.

| key                  | type | holds                                                          |
| -------------------- | ---- | -------------------------------------------------------------- |
| ``P asst:<id>``      | hash | ``doc``: the current assistant (JSON); ``rev``: write counter; |
|                      |      | ``max_version``: the highest version number ever written       |
| ``P asst:<id>:v``    | hash | version number → that version (JSON)                           |
| ``P assistants:<tn>``| zset | a tenant's assistant ids by creation time (ms): search, count  |

The ``doc`` names its ``tenant``; a store object serves one tenant and treats another's
assistant as missing.

Each write is one Lua script. Changes that derive from the current record (patch, set
latest) read it, build the new one here, and write it only if ``rev`` is unchanged, so two
concurrent patches never lose one another's version: the loser re-reads and retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aredis

from core import jsonutil
from core.errors import Conflict, NotFound, TransientError
from core.ids import now_ms
from core.redis import awaited
from store.keys import check_prefix
from store.layout import DEFAULT_TENANT

_BATCH = 200
"""Assistants read per round trip when listing them all."""

_CAS_ATTEMPTS = 20

# KEYS: assistant, versions, index. ARGV: id, doc, version_doc, now.
# Returns nil when created, the existing doc when the id is taken.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('HGET', KEYS[1], 'doc') end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'rev', 1, 'max_version', 1)
redis.call('HSET', KEYS[2], '1', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return false
"""

# KEYS: assistant, versions. ARGV: expected rev, doc, max_version, version number, version doc
# ('' when no new version). Returns 1 written, 0 rev changed (retry), -1 no such assistant.
_WRITE = """
local rev = redis.call('HGET', KEYS[1], 'rev')
if not rev then return -1 end
if rev ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'rev', tonumber(rev) + 1, 'max_version', ARGV[3])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], ARGV[4], ARGV[5]) end
return 1
"""

# KEYS: assistant, versions, index. ARGV: id. Returns the number of keys deleted.
_DELETE = """
local n = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
"""

Builder = Callable[[dict[str, Any], int], tuple[dict[str, Any], int, dict[str, Any] | None]]
"""Builds ``(doc, max_version, new version or None)`` from ``(current doc, max_version)``."""

VERSION_FIELDS = ("graph_id", "name", "description", "config", "context", "metadata")
"""What a version holds besides its number; switching versions restores all of them."""


def contains(superset: Any, subset: Mapping[str, Any]) -> bool:
    """Postgres ``@>`` on JSON objects: every key of ``subset`` is in ``superset`` with an
    equal value, nested objects compared the same way (how the protocol filters metadata)."""
    if not isinstance(superset, Mapping):
        return False
    for key, value in subset.items():
        if key not in superset:
            return False
        if isinstance(value, Mapping) and isinstance(superset[key], Mapping):
            if not contains(superset[key], value):
                return False
        elif superset[key] != value:
            return False
    return True


class AssistantStore:
    """Stored assistants and their versions on one Redis."""

    def __init__(self, client: aredis.Redis, *, prefix: str = "il:", tenant: str = DEFAULT_TENANT) -> None:
        self.client = client
        self.prefix = check_prefix(prefix)
        self.tenant = tenant
        self.index = f"{prefix}assistants:{tenant}"
        self._create = client.register_script(_CREATE)
        self._write = client.register_script(_WRITE)
        self._delete = client.register_script(_DELETE)

    def key(self, assistant_id: str) -> str:
        return f"{self.prefix}asst:{assistant_id}"

    def versions_key(self, assistant_id: str) -> str:
        return f"{self.prefix}asst:{assistant_id}:v"

    def _owned(self, doc: Mapping[str, Any]) -> bool:
        return bool(doc.get("tenant", DEFAULT_TENANT) == self.tenant)

    async def get(self, assistant_id: str) -> dict[str, Any] | None:
        raw = await awaited(self.client.hget(self.key(assistant_id), "doc"))
        doc = dict(jsonutil.loads(raw)) if raw else None
        return doc if doc is not None and self._owned(doc) else None

    async def _current(self, assistant_id: str) -> tuple[dict[str, Any], bytes, int]:
        doc, rev, max_version = await awaited(
            self.client.hmget(self.key(assistant_id), ["doc", "rev", "max_version"])
        )
        current = dict(jsonutil.loads(doc)) if doc is not None else None
        if current is None or not self._owned(current):
            raise NotFound(f"assistant {assistant_id} not found")
        return current, rev, int(max_version)

    async def create(
        self,
        assistant_id: str,
        *,
        graph_id: str,
        name: str,
        description: str | None,
        config: Mapping[str, Any],
        context: Mapping[str, Any],
        metadata: Mapping[str, Any],
        if_exists: str = "raise",
    ) -> dict[str, Any]:
        """Create version 1. An existing id: Conflict, or the existing assistant with
        ``if_exists="do_nothing"`` (nothing is written either way)."""
        now = now_ms()
        version = {
            "assistant_id": assistant_id,
            "version": 1,
            "graph_id": graph_id,
            "name": name,
            "description": description,
            "config": dict(config),
            "context": dict(context),
            "metadata": dict(metadata),
            "created_at": now,
        }
        doc = {**version, "updated_at": now, "tenant": self.tenant}
        existing = await self._create(
            keys=[self.key(assistant_id), self.versions_key(assistant_id), self.index],
            args=[assistant_id, jsonutil.dumps(doc), jsonutil.dumps(version), now],
        )
        if existing is None:
            return doc
        found = dict(jsonutil.loads(existing))
        if if_exists == "do_nothing" and self._owned(found):
            return found
        raise Conflict(f"assistant {assistant_id} already exists (send if_exists='do_nothing' to reuse it)")

    async def _cas(self, assistant_id: str, build: Builder) -> dict[str, Any]:
        """Read the current record, build the new one, write it if nobody wrote in
        between; otherwise start over."""
        for _ in range(_CAS_ATTEMPTS):
            current, rev, max_version = await self._current(assistant_id)
            doc, new_max, version = build(current, max_version)
            written = await self._write(
                keys=[self.key(assistant_id), self.versions_key(assistant_id)],
                args=[
                    rev,
                    jsonutil.dumps(doc),
                    new_max,
                    str(version["version"]) if version else "",
                    jsonutil.dumps(version) if version else "",
                ],
            )
            if written == 1:
                return dict(doc)
            if written == -1:
                raise NotFound(f"assistant {assistant_id} not found")
        raise TransientError(f"assistant {assistant_id} is being changed concurrently; retry")

    async def patch(self, assistant_id: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Write a new version from the current one with ``changes`` applied (metadata is
        merged into the current metadata, every other field replaced) and make it current."""

        def build(current: dict[str, Any], max_version: int) -> tuple[dict[str, Any], int, dict[str, Any]]:
            now = now_ms()
            fields = {f: current.get(f) for f in VERSION_FIELDS}
            for field, value in changes.items():
                if field == "metadata":
                    fields["metadata"] = {**(current.get("metadata") or {}), **value}
                else:
                    fields[field] = value
            number = max_version + 1
            version = {"assistant_id": assistant_id, "version": number, **fields, "created_at": now}
            doc = {**current, **fields, "version": number, "updated_at": now}
            return doc, number, version

        return await self._cas(assistant_id, build)

    async def set_latest(self, assistant_id: str, version: int) -> dict[str, Any]:
        """Make an existing version the current one (no new version is written)."""
        if await self.get(assistant_id) is None:
            raise NotFound(f"assistant {assistant_id} not found")
        raw = await awaited(self.client.hget(self.versions_key(assistant_id), str(version)))
        if raw is None:
            if await self.get(assistant_id) is None:
                raise NotFound(f"assistant {assistant_id} not found")
            raise NotFound(f"assistant {assistant_id} has no version {version}")
        chosen = jsonutil.loads(raw)

        def build(current: dict[str, Any], max_version: int) -> tuple[dict[str, Any], int, None]:
            fields = {f: chosen.get(f) for f in VERSION_FIELDS}
            return {**current, **fields, "version": version, "updated_at": now_ms()}, max_version, None

        return await self._cas(assistant_id, build)

    async def versions(self, assistant_id: str) -> list[dict[str, Any]] | None:
        """Every version, newest number first; None when the assistant does not exist."""
        if await self.get(assistant_id) is None:
            return None
        raw: dict[bytes, bytes] = await awaited(self.client.hgetall(self.versions_key(assistant_id)))
        if not raw:
            return None
        found = [dict(jsonutil.loads(v)) for v in raw.values()]
        return sorted(found, key=lambda v: int(v["version"]), reverse=True)

    async def delete(self, assistant_id: str) -> bool:
        """Delete the assistant and all its versions; False when there was none."""
        if await self.get(assistant_id) is None:
            return False
        deleted = await self._delete(
            keys=[self.key(assistant_id), self.versions_key(assistant_id), self.index],
            args=[assistant_id],
        )
        return int(deleted) > 0

    async def all(self) -> list[dict[str, Any]]:
        """Every stored assistant, newest first."""
        ids: Any = await self.client.zrevrange(self.index, 0, -1)
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), _BATCH):
            pipe = self.client.pipeline(transaction=False)
            for aid in ids[start : start + _BATCH]:
                pipe.hget(self.key(aid.decode()), "doc")
            found.extend(dict(jsonutil.loads(doc)) for doc in await pipe.execute() if doc)
        return [doc for doc in found if self._owned(doc)]
