"""The console's session cookie, its CSRF token and its one-shot messages.

A console session is one cookie, ``interlock_console``: a random nonce and the API key the
person logged in with, HttpOnly, SameSite=Strict, path ``/console``. Every console request
is authenticated from it exactly like an API request with that key (``api/auth.py``), so
a revoked key stops working in the console too, within the auth cache's few seconds.

Forms that change something carry a CSRF token: an HMAC of the session's nonce keyed by
the API key. It differs per session, needs no server-side state, and a page of another
site can neither read it nor (SameSite=Strict) send the cookie that goes with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

COOKIE = "interlock_console"
FLASH_COOKIE = "interlock_flash"
PATH = "/console"
MAX_AGE_S = 12 * 3600
"""A console session lasts a working day; then the key is asked for again."""


def is_console(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


@dataclass(frozen=True)
class Session:
    nonce: str
    key: str

    @classmethod
    def new(cls, key: str) -> Session:
        return cls(nonce=secrets.token_urlsafe(18), key=key)

    @classmethod
    def parse(cls, value: str | None) -> Session | None:
        """The session in a cookie value, or None when there is none or it is garbled."""
        if not value:
            return None
        nonce, _, encoded = value.partition(".")
        try:
            key = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return cls(nonce, key) if nonce else None

    def encode(self) -> str:
        # base64: a key may hold characters a cookie value may not.
        return f"{self.nonce}.{base64.urlsafe_b64encode(self.key.encode()).decode().rstrip('=')}"

    @property
    def csrf(self) -> str:
        return hmac.new(self.key.encode(), b"csrf:" + self.nonce.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, token or "")


def encode_flash(message: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(message).encode()).decode()


def decode_flash(value: str | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        found = json.loads(base64.urlsafe_b64decode(value.encode()))
    except (binascii.Error, ValueError):
        return None
    return found if isinstance(found, dict) else None
