"""API keys made with ``interlock keys create``, shared by every API process.

| key             | type | holds                                                            |
| --------------- | ---- | ---------------------------------------------------------------- |
| ``P apikeys``   | hash | SHA-256 of the key (hex) → ``{id, name, tenant, roles, created}`` |

Only the digest is stored: a copy of the database gives no usable key. The key itself is
shown once, when it is made.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aredis

from core import jsonutil
from core.ids import now_ms
from core.redis import awaited
from store.keys import check_prefix

KEY_PREFIX = "il_"
"""Every generated key starts with this, so secret scanners and people recognise one."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeyStore:
    def __init__(self, client: aredis.Redis, *, prefix: str = "il:") -> None:
        self.client = client
        self.key = f"{check_prefix(prefix)}apikeys"

    async def create(
        self, *, tenant: str, roles: Sequence[str], name: str = "", groups: Sequence[str] = ()
    ) -> tuple[str, dict[str, Any]]:
        """Make a key. Returns ``(key, record)``; the key is not retrievable later."""
        key = KEY_PREFIX + secrets.token_urlsafe(30)
        record = {
            "id": secrets.token_hex(6),
            "name": name,
            "tenant": tenant,
            "roles": list(roles),
            "groups": list(groups),
            "created_at": now_ms(),
        }
        await awaited(self.client.hset(self.key, digest(key), jsonutil.dumps(record)))
        return key, record

    async def lookup(self, key: str) -> dict[str, Any] | None:
        raw = await awaited(self.client.hget(self.key, digest(key)))
        return jsonutil.loads(raw) if raw else None

    async def list(self, tenant: str | None = None) -> list[dict[str, Any]]:
        raw: dict[bytes, bytes] = await awaited(self.client.hgetall(self.key))
        records = [jsonutil.loads(v) for v in raw.values()]
        return sorted(
            (r for r in records if tenant is None or r["tenant"] == tenant), key=lambda r: r["created_at"]
        )

    async def revoke(self, key_id: str) -> bool:
        """Delete the key with this id. Returns whether one existed."""
        raw: dict[bytes, bytes] = await awaited(self.client.hgetall(self.key))
        for field, value in raw.items():
            if jsonutil.loads(value)["id"] == key_id:
                return bool(await awaited(self.client.hdel(self.key, field)))
        return False
