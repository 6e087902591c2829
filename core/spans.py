"""Spans for the hot path: the segment root and one span per node execution.

The SDK's span is general: every attribute goes through a validating, locked
``BoundedAttributes``, every event through another, and ``end`` copies the span into a
``ReadableSpan`` for the processors. That is ~20 µs of CPU per span before export here,
on nodes that cost about a millisecond all told. :class:`LeanSpan` implements the same
``opentelemetry.trace.Span`` API over a plain dict and list (our own attributes are
already clean; values from elsewhere are checked as the SDK checks them), is itself the
``ReadableSpan`` the processors get, and keeps the SDK's limits (``OTEL_SPAN_*_LIMIT``).

:class:`HotTracer` makes them with the installed SDK tracer provider's sampler, id
generator, resource and span processors, so they are sampled, batched, exported and
read by any processor exactly as the SDK's spans are; children made inside them with any
other tracer nest under them as usual. A lean span started under a recording lean span
(a node under its segment's root) takes its parent's sampling decision without asking
the sampler, as the default ``ParentBased`` sampler decides (and any sampler that goes
by the trace id: the same for both). Without an SDK provider it hands out whatever the
API's tracer does (no-op spans), so it costs nothing when tracing is off.

Three shortcuts rest on how the OpenTelemetry packages are built, each checked at import
and replaced by the public call when it does not hold: a child's ``SpanContext`` is made
as the tuple it is (with ``RandomIdGenerator``'s draw), the SDK's default sampler
``ParentBased(ALWAYS_ON)`` is decided here rather than called, and the current span is
set and read on the default runtime context's variable. ``tests/core/test_spans.py`` holds
each against the SDK's own behaviour.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from contextvars import ContextVar
from random import getrandbits
from time import time_ns
from typing import Any, Final, cast

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import DEFAULT_ON
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.trace.propagation import _SPAN_KEY

log = logging.getLogger(__name__)

_PRIMITIVE = (str, bool, int, float)
_RANDOM_TRACE_ID = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))
UNSET_STATUS = Status(StatusCode.UNSET)
"""The status of every lean span until ``set_status`` gives it another."""


def _tuple_layout() -> bool:
    """Whether ``SpanContext`` is the tuple ``(trace_id, span_id, is_remote, trace_flags,
    trace_state, is_valid)`` (as in every API release so far): then a child's context is
    made as that tuple, without ``SpanContext.__new__`` checking ids we made ourselves."""
    probe = SpanContext(1, 2, True, TraceFlags(1), TraceState([("k", "v")]))
    return isinstance(probe, tuple) and tuple(probe) == (1, 2, True, 1, probe.trace_state, True)


_CONTEXT_AS_TUPLE = _tuple_layout()
CONTEXT_AS_TUPLE: Final = _CONTEXT_AS_TUPLE
"""Whether a ``SpanContext`` may be read by index: ``(trace_id, span_id, is_remote,
trace_flags, trace_state, is_valid)`` (``core.otlp`` reads it so)."""
_new_tuple = tuple.__new__

_runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
_current_context: ContextVar[Context] | None = (
    _runtime._current_context if type(_runtime) is ContextVarsRuntimeContext else None
)
"""The context variable of OpenTelemetry's default runtime context, when that is the one in
use (``OTEL_PYTHON_CONTEXT`` unset): :func:`activate` sets it directly."""


def _clean(key: str, value: Any, max_length: int | None) -> tuple[bool, Any]:
    """``(True, value)`` as the SDK would store it under ``key`` (strings cut to
    ``max_length``; anything else cleaned by the SDK's own rules), ``(False, None)`` if
    the SDK would drop it."""
    if not key or not isinstance(key, str):
        return False, None
    if type(value) is str:
        return True, value if max_length is None else value[:max_length]
    if type(value) in _PRIMITIVE:
        return True, value
    cleaned = BoundedAttributes(None, {key: value}, immutable=True, max_value_len=max_length)
    return (True, cleaned[key]) if key in cleaned else (False, None)


def _stored_as_given(count: int, limit: int | None, max_length: int | None) -> bool:
    """Whether ``count`` attributes with primitive values are stored just as given under
    a count ``limit`` and a string ``max_length``: none to drop, no string to cut."""
    return max_length is None and (limit is None or count <= limit)


def _child_context(parent: SpanContext, ids: Any) -> SpanContext:
    """A new span's context under ``parent``, with its sampling decision and trace state."""
    if _CONTEXT_AS_TUPLE and type(ids) is RandomIdGenerator:
        span_id = getrandbits(64)  # what RandomIdGenerator.generate_span_id draws
        while not span_id:
            span_id = getrandbits(64)
        trace_id, _, _, flags, state, valid = parent
        return _new_tuple(SpanContext, (trace_id, span_id, False, flags, state, valid))
    return SpanContext(parent.trace_id, ids.generate_span_id(), False, parent.trace_flags, parent.trace_state)


class LeanEvent(Event):
    """An event our own code made, with ``key``: a hashable value that fixes its name and
    attributes (values and their types), so its encoding can be cached under it."""

    def __init__(self, name: str, attributes: dict[str, Any], timestamp: int, key: Any) -> None:
        self._name = name
        self._attributes = attributes
        self._timestamp = timestamp
        self.key = key


class LeanSpan(trace.Span, ReadableSpan):
    """A recording span over plain containers (see the module's docstring)."""

    _context: SpanContext
    # What most spans keep as they start, as class attributes: fewer stores per span.
    _instrumentation_info = None
    _end_time: int | None = None
    _links: tuple[Link, ...] = ()
    _status = UNSET_STATUS
    _dropped_attributes = 0
    _dropped_events = 0
    _dropped_links = 0

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        tracer: HotTracer,
        attributes: dict[str, Any],
        links: Sequence[Link],
        kind: SpanKind,
        start_time: int,
    ) -> None:
        # ReadableSpan's fields, set directly (its __init__ would make a Resource).
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._resource = tracer.resource
        self._instrumentation_scope = tracer.scope
        self._start_time = start_time
        self._attributes = self._plain = attributes
        self._events: list[Event] = []
        if links:
            self._links = tuple(links)
        self._tracer = tracer
        self._limits = tracer.limits
        self._processor = tracer.processor

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'

    # ReadableSpan

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_attributes

    @property
    def dropped_events(self) -> int:
        return self._dropped_events

    @property
    def dropped_links(self) -> int:
        return self._dropped_links

    # opentelemetry.trace.Span

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_time is not None:
            log.warning("Setting attribute on ended span.")
            return
        limit = self._limits.max_span_attributes
        kept, cleaned = (
            (False, None) if limit == 0 else _clean(key, value, self._limits.max_span_attribute_length)
        )
        if not kept:
            self._dropped_attributes += 1
            return
        attributes = self._plain
        if key in attributes:
            del attributes[key]  # as the SDK: a key set again moves to the end
        if limit is not None and len(attributes) >= limit:
            del attributes[next(iter(attributes))]  # as the SDK: the oldest goes
            self._dropped_attributes += 1
        attributes[key] = cleaned

    def set_trusted(self, key: str, value: str | int | float | bool) -> None:
        """``set_attribute`` for a value the caller knows is valid: no cleaning (the span
        attribute limits still hold)."""
        limit = self._limits.max_span_attributes
        if (
            self._end_time is None
            and self._limits.max_span_attribute_length is None
            and (limit is None or key in self._plain or len(self._plain) < limit)
        ):
            self._plain[key] = value
        else:
            self.set_attribute(key, value)

    def add_trusted_event(self, name: str, attributes: dict[str, Any], key: Any = None) -> None:
        """``add_event`` with attributes the caller knows are valid, in a dict of its
        own that it gives up: no copy, no cleaning (the limits still hold). ``key``, if
        given, is hashable and determines ``name`` and ``attributes`` exactly, types
        included (``(name, value, …)`` with fixed keys): the exporter caches the event's
        encoding under it (:class:`LeanEvent`)."""
        limits = self._limits
        if (
            self._end_time is None
            and _stored_as_given(len(attributes), limits.max_event_attributes, limits.max_attribute_length)
            and (limits.max_events is None or len(self._events) < limits.max_events)
        ):
            if key is None:
                self._events.append(Event(name, attributes, time_ns()))
            else:
                self._events.append(LeanEvent(name, attributes, time_ns(), key))
        else:
            self.add_event(name, attributes)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if self._end_time is not None:
            log.warning("Calling add_event on an ended span.")
            return
        limits = self._limits
        plain: Mapping[str, Any] | None
        if not attributes:
            plain = {}
        elif _stored_as_given(
            len(attributes), limits.max_event_attributes, limits.max_attribute_length
        ) and all(type(v) in _PRIMITIVE for v in attributes.values()):
            plain = dict(attributes)  # already clean: what our own events carry
        else:
            plain = BoundedAttributes(
                limits.max_event_attributes,
                attributes,
                immutable=True,
                max_value_len=limits.max_attribute_length,
            )
        events = self._events
        if limits.max_events is not None and len(events) >= limits.max_events:
            self._dropped_events += 1
            if not events:
                return
            events.pop(0)
        events.append(Event(name, plain, timestamp if timestamp is not None else time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling add_link on an ended span.")
            return
        if context is None or not (context.is_valid or attributes or context.trace_state):
            return
        bounded = BoundedAttributes(
            self._limits.max_link_attributes,
            attributes,
            immutable=True,
            max_value_len=self._limits.max_attribute_length,
        )
        links = list(self._links)
        if self._limits.max_links is not None and len(links) >= self._limits.max_links:
            self._dropped_links += 1
            if not links:
                return
            links.pop(0)
        links.append(Link(context, bounded))
        self._links = tuple(links)

    def update_name(self, name: str) -> None:
        if self._end_time is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling set_status on an ended span.")
            return
        if self._status.status_code is StatusCode.OK:
            return  # as the SDK: OK is final
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            log.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        self._processor.on_end(self)


class HotTracer:
    """Makes :class:`LeanSpan` s under the installed SDK tracer provider (see the
    module's docstring); the API's tracer's spans without one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.scope = InstrumentationScope(name)
        self._provider: object = None
        self._enabled = False
        self.resource: Any = None
        self.processor: SpanProcessor = SpanProcessor()
        self.limits = SpanLimits()
        self._sampler: Any = None
        self._ids: Any = None

    def _bind(self, provider: object) -> None:
        """Take the sampler, ids, resource, processors and limits of ``provider``."""
        self._provider = provider
        self._enabled = isinstance(provider, TracerProvider)
        if isinstance(provider, TracerProvider):
            sdk = cast(SdkTracer, provider.get_tracer(self.name))
            self.resource = sdk.resource
            self._sampler = sdk.sampler
            self._ids = sdk.id_generator
            # The provider's multi-processor: processors added to it later are seen too.
            self.processor = sdk.span_processor
            self.limits = getattr(provider, "_span_limits", None) or SpanLimits()

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] = (),
        start_time: int | None = None,
    ) -> trace.Span:
        provider = trace.get_tracer_provider()
        if provider is not self._provider:
            self._bind(provider)
        if not self._enabled:
            return trace.get_tracer(self.name).start_span(name, context, kind, attributes, links, start_time)
        current = current_span() if context is None else trace.get_current_span(context)
        parent: SpanContext | None = current.get_span_context()
        if type(current) is LeanSpan and current._end_time is None and not links and parent is not None:
            # Under a recording lean span (a node under its segment's root): the parent's
            # decision, as the default ParentBased sampler takes it, without asking.
            span_context = _child_context(parent, self._ids)
            given: Mapping[str, Any] = attributes or {}
        else:
            if parent is None or not parent.is_valid:
                parent = None
                trace_id = self._ids.generate_trace_id()
                random_trace_id = bool(getattr(self._ids, "is_trace_id_random", lambda: False)())
            else:
                trace_id = parent.trace_id
                random_trace_id = bool(parent.trace_flags & _RANDOM_TRACE_ID)
            if self._sampler is DEFAULT_ON:
                # The SDK's default sampler, ParentBased(ALWAYS_ON), decided here as it
                # decides: a root is sampled, a child as its parent was, with the parent's
                # trace state and the attributes as given.
                is_sampled = parent is None or parent.trace_flags.sampled
                recording, trace_state = is_sampled, parent.trace_state if parent is not None else None
                given = attributes or {}
            else:
                sampled = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
                is_sampled, recording = sampled.decision.is_sampled(), sampled.decision.is_recording()
                trace_state, given = sampled.trace_state, sampled.attributes or {}
            flags = TraceFlags.SAMPLED if is_sampled else TraceFlags.DEFAULT
            if random_trace_id:
                flags |= _RANDOM_TRACE_ID
            span_context = SpanContext(
                trace_id,
                self._ids.generate_span_id(),
                is_remote=False,
                trace_flags=TraceFlags(flags),
                trace_state=trace_state,
            )
            if not recording:
                return trace.NonRecordingSpan(span_context)
        limits = self.limits
        if _stored_as_given(len(given), limits.max_span_attributes, limits.max_span_attribute_length) and all(
            type(v) in _PRIMITIVE for v in given.values()
        ):
            plain = dict(given)
        else:
            plain = {}
        span = LeanSpan(name, span_context, parent, self, plain, (), kind, start_time or time_ns())
        if not plain and given:
            span.set_attributes(given)
        for link in links:
            span.add_link(link.context, link.attributes)
        # Processors read spans through ReadableSpan, which a lean span is.
        self.processor.on_start(span, parent_context=context)  # type: ignore[arg-type]
        return span

    def start_child(self, name: str, attributes: dict[str, Any]) -> trace.Span:
        """A span under the current span, for the hot path: when that is a recording
        lean span, a lean child of it, sharing its provider's processors and its sampling
        decision, with ``attributes`` that the caller vouches for (str, int, float or
        bool values, in a dict of its own that it gives up); otherwise
        :meth:`start_span`."""
        current = current_span()
        if type(current) is LeanSpan and current._end_time is None:
            limits = current._limits
            if _stored_as_given(
                len(attributes), limits.max_span_attributes, limits.max_span_attribute_length
            ):
                parent = current._context
                assert parent is not None
                owner = current._tracer
                span = LeanSpan(
                    name,
                    _child_context(parent, owner._ids),
                    parent,
                    owner,
                    attributes,
                    (),
                    SpanKind.INTERNAL,
                    time_ns(),
                )
                span._instrumentation_scope = self.scope
                owner.processor.on_start(span)  # type: ignore[arg-type]
                return span
        return self.start_span(name, attributes=attributes)

    def start_as_current_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Link] = (),
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> AbstractContextManager[trace.Span]:
        return _Current(
            self.start_span(name, context, kind, attributes, links), record_exception, set_status_on_exception
        )


class _Current(AbstractContextManager[trace.Span]):
    """What ``trace.use_span(span, end_on_exit=True, …)`` does, as an object rather
    than two generators: current inside the block; an ``Exception`` escaping it recorded
    and setting the status (as asked); ended on the way out."""

    __slots__ = ("record_exception", "set_status_on_exception", "span", "token")

    def __init__(self, span: trace.Span, record_exception: bool, set_status_on_exception: bool) -> None:
        self.span = span
        self.record_exception = record_exception
        self.set_status_on_exception = set_status_on_exception
        self.token: object = None

    def __enter__(self) -> trace.Span:
        self.token = activate(self.span)
        return self.span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        span = self.span
        deactivate(self.token)
        try:
            # As use_span: only Exception (not GeneratorExit, CancelledError…) is an error.
            if isinstance(exc, Exception) and span.is_recording():
                if self.record_exception:
                    span.record_exception(exc)
                if self.set_status_on_exception:
                    span.set_status(Status(StatusCode.ERROR, description=f"{type(exc).__name__}: {exc}"))
        finally:
            span.end()


def activate(span: trace.Span) -> object:
    """Make ``span`` the current span (what ``trace.use_span`` does, without a generator
    per call); give the result to :func:`deactivate`."""
    if _current_context is not None:
        return _current_context.set(Context({**_current_context.get(), _SPAN_KEY: span}))
    return context_api.attach(trace.set_span_in_context(span))


def deactivate(token: object) -> None:
    if _current_context is None:
        context_api.detach(token)  # type: ignore[arg-type]
        return
    try:
        _current_context.reset(token)  # type: ignore[arg-type]
    except Exception:  # as context_api.detach
        log.exception("Failed to detach context")


def current_span() -> trace.Span:
    """``trace.get_current_span()``, read directly from the default runtime context."""
    if _current_context is not None:
        span = _current_context.get().get(_SPAN_KEY)
        return span if type(span) is LeanSpan or isinstance(span, trace.Span) else trace.INVALID_SPAN
    return trace.get_current_span()
