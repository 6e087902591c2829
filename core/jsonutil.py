"""Fast JSON for state values, events and records (orjson), with a default that covers
the types LangGraph state commonly holds (pydantic models, dataclasses, sets, messages)."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from pydantic import BaseModel

from core.errors import InvalidInput

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def _default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if hasattr(obj, "_asdict"):  # NamedTuple
        return obj._asdict()
    if hasattr(obj, "to_json"):  # langchain serialisable objects
        return obj.to_json()
    return repr(obj)


def dumps(obj: Any) -> bytes:
    """JSON bytes. Text that is not valid Unicode (a lone surrogate such as ``"\\ud800"``,
    which JSON can spell but UTF-8 cannot hold) and integers beyond 64 bits (JSON has no
    limit, orjson has) are refused as ``InvalidInput``."""
    try:
        return orjson.dumps(obj, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as e:
        if "surrogates" in str(e):
            raise InvalidInput(
                "the data holds a lone surrogate (\\ud800-\\udfff), which is not valid Unicode; send valid UTF-8 text"
            ) from None
        if "64-bit" in str(e):
            raise InvalidInput(
                "the data holds an integer beyond the 64-bit range (-9223372036854775808.."
                "18446744073709551615), which cannot be stored; send it as a string"
            ) from None
        raise


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
