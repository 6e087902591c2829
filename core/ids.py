"""Identifiers. Run and thread ids are UUIDs as the Agent Server protocol expects."""

from __future__ import annotations

import re
import time
import uuid
from typing import NewType

ThreadId = NewType("ThreadId", str)
RunId = NewType("RunId", str)
GraphId = NewType("GraphId", str)

# The Agent Server derives a graph's default assistant id as uuid5(this namespace, graph_id).
_ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")


def new_id() -> str:
    """A time-ordered UUID (v7 layout), so ids sort by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = uuid.uuid4().int & ((1 << 74) - 1)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def default_assistant_id(graph_id: str) -> str:
    return str(uuid.uuid5(_ASSISTANT_NAMESPACE, graph_id))


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


STREAM_ID = r"^\d{1,20}-\d{1,20}$"
"""A Redis stream entry id, ``<ms>-<seq>`` (event, decision and audit entry ids)."""
_U64 = 2**64 - 1


def is_stream_id(value: str) -> bool:
    """Whether ``value`` is a stream id Redis takes: both parts digits that fit 64 bits
    (20 digits can exceed them, and Redis then refuses the command)."""
    if not re.fullmatch(STREAM_ID, value):
        return False
    ms, _, seq = value.partition("-")
    return int(ms) <= _U64 and int(seq) <= _U64


def now_ms() -> int:
    return time.time_ns() // 1_000_000
