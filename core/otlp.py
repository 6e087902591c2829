"""OTLP/HTTP span export with an encoder that writes the protobuf bytes itself.

The SDK's exporter builds a tree of protobuf message objects per batch (every span, key,
value and event an object) and then serialises it: about 45–70 µs of CPU per span on this
kind of machine, more than the span itself cost to record. Spans of one service repeat
most of what they carry (the resource, the instrumentation scope, ``session.id`` and the
other per-thread attributes, node names), so :func:`encode_spans` writes the wire format
directly and keeps the bytes of repeated parts: the resource and scope of each batch
once, a string or int attribute's ``KeyValue`` and a keyed event's bytes from bounded
caches (ids, which never repeat, stay out of them). The usual lean span (no links,
status, drops or trace state) has a path of its own.

The bytes are those of ``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans``
for the same spans, field for field (``tests/core/test_otlp.py`` parses both and compares
them), so any OTLP receiver reads them the same way. :class:`SpanExporter` is the SDK's
``OTLPSpanExporter`` (endpoint, headers, TLS, compression, timeouts and retries from the
standard ``OTEL_EXPORTER_OTLP_*`` variables, unchanged) with this encoder.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import DEFAULT_TRACE_STATE, SpanContext, SpanKind

from core.spans import CONTEXT_AS_TUPLE, UNSET_STATUS, LeanEvent, LeanSpan

log = logging.getLogger(__name__)

_VARINTS = [bytes([i]) for i in range(128)] + [
    bytes([(i & 0x7F) | 0x80, i >> 7]) for i in range(128, 1 << 14)
]
"""Encoded varints below 2**14: every length and small count is a lookup."""

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack

# Span flags (trace.proto SpanFlags): the SDK says whether the parent was remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_FLAGS_LOCAL = b"\x85\x01" + _pack_i(_HAS_IS_REMOTE)  # field 16, fixed32
_FLAGS_REMOTE = b"\x85\x01" + _pack_i(_HAS_IS_REMOTE | _IS_REMOTE)
_LINK_FLAGS_LOCAL = b"\x35" + _pack_i(_HAS_IS_REMOTE)  # Link field 6, fixed32
_LINK_FLAGS_REMOTE = b"\x35" + _pack_i(_HAS_IS_REMOTE | _IS_REMOTE)

_KINDS = {kind.value: b"\x30" + _VARINTS[kind.value + 1] for kind in SpanKind}  # OTLP counts from 1
"""A span's ``kind`` field, by the kind's value: an enum member as a key hashes through a
Python call."""
_STATUS_UNSET = b"\x7a\x00"

_CACHE_LIMIT = 8192


def _remember(cache: dict[Any, bytes], key: Any, value: bytes) -> bytes:
    """Keep ``value`` under ``key`` in one of the bounded caches (emptied when full)."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


_string_pairs: dict[tuple[bytes, str, str], bytes] = {}
"""String attributes already seen, by ``(tag, key, value)``: the field's tag and the
length-prefixed ``KeyValue`` (bounded: cleared when full)."""


def _varint(value: int) -> bytes:
    if value < 16384:
        return _VARINTS[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message (the SDK encoder's type order: bool before int)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _field(b"\x32", pairs)
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


_UNIQUE = frozenset(
    {
        "interlock.task_id",
        "interlock.checkpoint_id",
        "interlock.run_id",
        "interlock.continues.trace_id",
        "interlock.continues.span_id",
    }
)
"""Keys whose string values (ids) hardly ever repeat: cached, they would only push out
the values that do."""

_keys: dict[str, bytes] = {}
"""Each attribute key's ``KeyValue.key`` field (keys are few)."""
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _key(key: str) -> bytes:
    return _remember(_keys, key, _field(b"\x0a", key.encode()))


def _string_pair(tag: bytes, key: str, value: str) -> bytes:
    """A string attribute's field with ``tag`` (kept for next time)."""
    prefix = _keys.get(key) or _key(key)
    encoded = value.encode()
    any_value = b"\x0a" + _varint(len(encoded)) + encoded
    pair = prefix + b"\x12" + _varint(len(any_value)) + any_value
    return _remember(_string_pairs, (tag, key, value), tag + _varint(len(pair)) + pair)


_heads: dict[tuple[bytes, str, int], bytes] = {}
"""For a tag, a unique-valued key and a value of so many bytes: the field's bytes before
the value's own (ids have one length)."""


def _head(tag: bytes, key: str, size: int) -> bytes:
    prefix = _keys.get(key) or _key(key)
    any_head = b"\x0a" + _varint(size)
    head = prefix + b"\x12" + _varint(len(any_head) + size) + any_head
    return _remember(_heads, (tag, key, size), tag + _varint(len(head) + size) + head)


_int_pairs: dict[tuple[bytes, str, int], bytes] = {}
"""Int attributes already seen (steps, counts), by ``(tag, key, value)``: as
:data:`_string_pairs`."""


def _int_pair(tag: bytes, key: str, value: int) -> bytes:
    prefix = _keys.get(key) or _key(key)
    any_value = b"\x18" + _varint(value & _MASK64)
    pair = prefix + b"\x12" + _VARINTS[len(any_value)] + any_value
    return _remember(_int_pairs, (tag, key, value), tag + _varint(len(pair)) + pair)


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Each attribute as a repeated ``KeyValue`` field with ``tag``."""
    if not attributes:
        return b""
    parts: list[bytes] = []
    append = parts.append
    for key, value in attributes.items():
        kind = type(value)
        if kind is str:
            if key in _UNIQUE:
                encoded = value.encode()
                append(_heads.get((tag, key, len(encoded))) or _head(tag, key, len(encoded)))
                append(encoded)
            else:
                append(_string_pairs.get((tag, key, value)) or _string_pair(tag, key, value))
        elif kind is int:  # exactly int: True and 1 are equal keys, not equal values
            append(_int_pairs.get((tag, key, value)) or _int_pair(tag, key, value))
        else:
            try:
                append(_field(tag, _key_value(key, value)))
            except Exception as exc:  # the SDK encoder logs and skips such an attribute too
                log.exception("Failed to encode key %s: %s", key, exc)
    return b"".join(parts)


_event_rests: dict[tuple[Any, ...], bytes] = {}
"""An event's fields after its timestamp (name, attributes), by its name and attributes:
events repeat (an ``edge`` event per transition of every run of a graph)."""


_lean_event_rests: dict[Any, bytes] = {}
"""The same for :class:`LeanEvent` s, by the key their maker gave them."""


def _event(event: Any) -> bytes:
    """An ``Event`` field of a span (tag, length, message)."""
    if type(event) is LeanEvent:
        rest = _lean_event_rests.get(event.key)
        if rest is None:
            rest = _remember(_lean_event_rests, event.key, _event_body(event.name, event._attributes, 0))
        size = len(rest) + 9
        if size < 128:
            return _event_head(0x5A, size, 0x09, event._timestamp) + rest
    else:
        rest = _event_rest(event)
    body = b"\x09" + _pack_q(event.timestamp) + rest
    return b"\x5a" + _varint(len(body)) + body


def _event_body(name: str, attributes: Mapping[str, Any] | None, dropped: int) -> bytes:
    """An event's fields after its timestamp: name, attributes, dropped count."""
    rest = _field(b"\x12", name.encode()) + _attributes(b"\x1a", attributes)
    return rest + b"\x20" + _varint(dropped) if dropped else rest


def _event_rest(event: Any) -> bytes:
    """The fields of ``event`` after its timestamp."""
    attributes = _plain(event, event.attributes)
    dropped = event.dropped_attributes
    try:
        # With the types: True == 1 == 1.0 as keys, but not as attribute values.
        key: tuple[Any, ...] | None = (
            (event.name, dropped, *attributes.items(), *map(type, attributes.values()))
            if attributes
            else (event.name, dropped)
        )
        hash(key)
    except TypeError:  # unhashable values (lists, mappings): encode every time
        key = None
    rest = _event_rests.get(key) if key is not None else None
    if rest is None:
        rest = _event_body(event.name, attributes, dropped)
        if key is not None:
            _remember(_event_rests, key, rest)
    return rest


def _plain(holder: Any, public: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The attributes of a span, event or link as a plain dict where the SDK keeps one:
    its ``BoundedAttributes`` iterate through a lock, key by key (a third of the
    encoding time); ``public`` (the read-only view) otherwise."""
    raw = getattr(holder, "_attributes", None)
    raw = getattr(raw, "_dict", raw)
    return raw if type(raw) is dict or isinstance(raw, dict) else public


_ids = struct.Struct(">2sQQ2sQ").pack
_ids_with_parent = struct.Struct(">2sQQ2sQ2sQ").pack
_times = struct.Struct("<BQBQ").pack
_event_head = struct.Struct("<BBBQ").pack
"""An event's tag, its length (below 128), its timestamp's tag and the timestamp."""
_names: dict[str, bytes] = {}
"""Each span name's ``name`` field (names repeat: a node's span is named after it)."""


def _lean_span(span: LeanSpan) -> bytes:
    """:func:`_span` for the usual lean span (no trace state, links, drops or status),
    read from its own containers."""
    context = span._context
    parent = span._parent
    # SpanContext's fields by index where it is the plain tuple (core.spans checks): its
    # properties are Python calls, four per span.
    if CONTEXT_AS_TUPLE:
        trace_id, span_id = context[0], context[1]
    else:
        trace_id, span_id = context.trace_id, context.span_id
    name = _names.get(span._name)
    if name is None:
        name = _remember(_names, span._name, _field(b"\x2a", span._name.encode()))
    events = span._events
    if parent is not None:
        parent_id, remote = (parent[1], parent[2]) if CONTEXT_AS_TUPLE else (parent.span_id, parent.is_remote)
        ids = _ids_with_parent(
            b"\x0a\x10", trace_id >> 64, trace_id & _MASK64, b"\x12\x08", span_id, b"\x22\x08", parent_id
        )
    else:
        remote = False
        ids = _ids(b"\x0a\x10", trace_id >> 64, trace_id & _MASK64, b"\x12\x08", span_id)
    return b"".join(
        (
            ids,
            name,
            _KINDS[span._kind._value_],
            _times(0x39, span._start_time, 0x41, span._end_time or 0),
            _attributes(b"\x4a", span._plain),
            b"".join([_event(event) for event in events]) if events else b"",
            _STATUS_UNSET,
            _FLAGS_REMOTE if remote else _FLAGS_LOCAL,
        )
    )


def _span(span: ReadableSpan) -> bytes:
    """A ``Span`` message (trace.proto), fields in number order as the SDK writes them."""
    if type(span) is LeanSpan:
        if (
            span._status is UNSET_STATUS  # set_status replaces it, and never with UNSET
            and not span._links
            and not (span._dropped_attributes or span._dropped_events or span._dropped_links)
        ):
            state = span._context.trace_state
            if state is DEFAULT_TRACE_STATE or not state:
                return _lean_span(span)
        # Ours: its plain containers, without the read-only copies.
        attributes: Mapping[str, Any] | None = span._plain
        events: Sequence[Any] = span._events
        links: Sequence[Any] = span._links
        dropped = (span._dropped_attributes, span._dropped_events, span._dropped_links)
        context: SpanContext | None = span._context
        parent, start, end = span._parent, span._start_time, span._end_time
    else:
        attributes = _plain(span, span.attributes)
        events, links = span.events, span.links
        dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
        context, parent, start, end = span.get_span_context(), span.parent, span.start_time, span.end_time
    assert context is not None
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode()))
    if parent:
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_field(b"\x2a", span.name.encode()))
    parts.append(_KINDS[span.kind.value])
    parts.append(b"\x39" + _pack_q(start or 0))
    parts.append(b"\x41" + _pack_q(end or 0))
    parts.append(_attributes(b"\x4a", attributes))
    if dropped[0]:
        parts.append(b"\x50" + _varint(dropped[0]))
    for event in events:
        parts.append(_event(event))
    if dropped[1]:
        parts.append(b"\x60" + _varint(dropped[1]))
    for link in links:
        body = b"\x0a\x10" + link.context.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + link.context.span_id.to_bytes(8, "big")
        body += _attributes(b"\x22", link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += _LINK_FLAGS_REMOTE if link.context.is_remote else _LINK_FLAGS_LOCAL
        parts.append(_field(b"\x6a", body))
    if dropped[2]:
        parts.append(b"\x70" + _varint(dropped[2]))
    status = span.status
    if status.status_code.value == 0 and not status.description:
        parts.append(_STATUS_UNSET)
    else:
        body = _field(b"\x12", status.description.encode()) if status.description else b""
        if status.status_code.value:
            body += b"\x18" + _VARINTS[status.status_code.value]
        parts.append(_field(b"\x7a", body))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _resource(resource: Resource) -> bytes:
    return _attributes(b"\x0a", resource.attributes)


def _scope(scope: InstrumentationScope | None) -> bytes:
    if scope is None:
        return b""
    body = _field(b"\x0a", scope.name.encode()) if scope.name else b""
    if scope.version:
        body += _field(b"\x12", scope.version.encode())
    return body + _attributes(b"\x1a", scope.attributes)


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """An ``ExportTraceServiceRequest`` holding ``spans``, grouped by resource and then
    by instrumentation scope in the order they first appear (as the SDK groups them).

    Each message's length is added up from its parts, so the spans' bytes are copied
    once, into the request, rather than once per enclosing message."""
    # Grouped by identity first (a Resource hashes by JSON-encoding its attributes, on
    # every call), then merged by equality as the SDK groups them.
    by_identity: dict[tuple[int, int], list[bytes]] = {}
    objects: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None]] = {}
    for span in spans:
        if type(span) is LeanSpan:
            resource, scope = span._resource, span._instrumentation_scope
        else:
            resource, scope = span.resource, span.instrumentation_scope or None
        key = (id(resource), id(scope))
        encoded = by_identity.get(key)
        if encoded is None:
            encoded = by_identity[key] = []
            objects[key] = (resource, scope)
        body = _span(span)
        encoded.append(b"\x12" + _varint(len(body)))
        encoded.append(body)
    groups: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for key, encoded in by_identity.items():
        resource, scope = objects[key]
        groups.setdefault(resource, {}).setdefault(scope, []).extend(encoded)
    out: list[bytes] = []
    for resource, by_scope in groups.items():
        parts = [_field(b"\x0a", _resource(resource))]
        for scope, encoded in by_scope.items():
            head = _field(b"\x0a", _scope(scope))
            tail = (
                _field(b"\x1a", scope.schema_url.encode()) if scope is not None and scope.schema_url else b""
            )
            parts.append(b"\x12" + _varint(len(head) + sum(map(len, encoded)) + len(tail)))
            parts.append(head)
            parts.extend(encoded)
            parts.append(tail)
        if resource.schema_url:
            parts.append(_field(b"\x1a", resource.schema_url.encode()))
        out.append(b"\x0a" + _varint(sum(map(len, parts))))
        out.extend(parts)
    return b"".join(out)


class SpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` with :func:`encode_spans`: the same requests, a fraction of
    the CPU. Everything but the encoding (the HTTP client, its retries and its limits) is
    the SDK's; should a later SDK no longer have the client this relies on, it exports
    as the SDK does (and says so once)."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)
        if client is None or self._shutdown:
            if client is None and not getattr(self, "_warned", False):
                self._warned = True
                log.warning(
                    "this opentelemetry-exporter-otlp-proto-http has no _client: exporting with its encoder"
                )
            return super().export(spans)
        try:
            data = encode_spans(spans)
        except Exception:
            log.exception("Failed to encode span batch")
            return SpanExportResult.FAILURE
        limit = self._max_request_size
        if limit > 0 and len(data) > limit:
            log.warning(
                "Dropping span batch: serialized size %d bytes exceeds max_request_size %d", len(data), limit
            )
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS if client.export(data).success else SpanExportResult.FAILURE
