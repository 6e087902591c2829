"""Helpers for Redis key names that carry a Redis Cluster hash tag.

Redis Cluster hashes only the part of a key between the first ``{`` and the next ``}``,
so keys that embed the same ``{thread_id}`` land in one slot, and one Lua script may touch
all of them. These helpers keep prefixes from breaking that rule.
"""

from __future__ import annotations

_GLOB_SPECIAL = frozenset("*?[]\\")


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged, or raise if it would break hash tags or SCAN patterns.

    Raises:
        ValueError: the prefix contains ``{`` or ``}`` (it would become the hash tag).
    """
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"key prefix {prefix!r} must not contain '{{' or '}}'")
    return prefix


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: the first ``{…}`` if non-empty, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def escape_glob(text: str) -> str:
    """Escape ``text`` so a SCAN ``MATCH`` pattern matches it literally."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)
