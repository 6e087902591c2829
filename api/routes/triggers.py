"""Inbound events: ``POST /triggers/{name}`` starts a run, or resumes the run that waits
for the event.

Triggers are configured (``INTERLOCK_TRIGGERS``), each with its own secret. The sender
signs the raw request body with it, the way Interlock signs its own webhooks
(``runs/webhooks.py``), so one scheme serves both directions::

    X-Interlock-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

A missing or wrong signature, or one older than five minutes (a replay), is 401 and
nothing happens. (The route is public in
``api/auth.py`` terms: the signature is its authentication, not an API key.) The body is
an event ``{"id": "<event id>", "type": "<event type>", "data": {...}}``:

- ``start`` triggers start a run of their ``graph_id`` on a new thread, with ``data`` as
  the input (422 when it does not fit the graph's input schema, and nothing is started).
- ``resume`` triggers deliver the event to the run waiting for their ``event`` with the
  correlation key ``data[<correlation>]`` (``agents/events.py``, ``runs/events.py``);
  when no run waits yet, the event is kept for the first that does.

**Duplicates.** An event id is claimed with ``SET NX`` (for a minute while it is being
handled, then for ``dedupe_ttl_s`` with the result): a redelivery gets ``202`` and the
first delivery's result with ``"duplicate": true``, and nothing happens twice. If the
handling fails the claim is dropped, so the sender's retry is handled afresh; a crash in
between holds the claim a minute. Behind that claim each action is idempotent itself: a
``start`` uses a thread id derived from the event id and does nothing when that thread
has a run already, and a waiting run is resumed exactly once whoever delivers to it.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from opentelemetry import context as otel_context
from opentelemetry import propagate
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from api.auth import Principal
from api.deps import EngineDep
from api.responses import JSONResponse
from api.routes.runs import submit_run
from api.schemas import RunCreate
from core import jsonutil
from core.errors import InvalidInput, NotFound, Unauthenticated
from core.ids import now_ms
from core.settings import TriggerConfig
from runs.engine import Engine
from runs.webhooks import verify_signature

router = APIRouter(tags=["triggers"])

SIGNATURE_HEADER = "X-Interlock-Signature"
CLAIM_S = 60
"""How long an event id is held while it is being handled."""
SIGNATURE_TOLERANCE_S = 300
"""How old a signature may be."""
_THREADS = uuid.UUID("0b6a3f0e-54c2-4d0e-9f39-6f1de2a1c7d1")
"""Namespace of the thread ids ``start`` triggers derive from event ids."""


class Event(BaseModel):
    """What a trigger receives."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=256)
    """Unique per event; a redelivery carries the same id."""
    type: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def _trigger(engine: Engine, name: str) -> TriggerConfig:
    for trigger in engine.settings.triggers:
        if trigger.name == name:
            return trigger
    raise NotFound(f"no trigger named {name!r} is configured (INTERLOCK_TRIGGERS)")


@router.post("/triggers/{name}", status_code=202)
async def receive_event(name: str, request: Request, engine: EngineDep) -> JSONResponse:
    """Receive a signed event: start a run, or resume the run waiting for it (202)."""
    trigger = _trigger(engine, name)
    raw = await request.body()
    header = request.headers.get(SIGNATURE_HEADER)
    if not verify_signature(trigger.secret.get_secret_value(), header, raw, SIGNATURE_TOLERANCE_S):
        raise Unauthenticated(
            f"missing, wrong or stale {SIGNATURE_HEADER} header: send 't=<unix seconds>,v1=<hex "
            "HMAC-SHA256 of \"<t>.<raw body>\" keyed with the trigger's secret>', made within 5 minutes"
        )
    try:
        event = Event.model_validate_json(raw)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}" for err in e.errors()
        )
        raise InvalidInput(f'the body must be an event {{"id", "type", "data"}}: {problems}') from None
    if trigger.event and event.type != trigger.event:
        raise InvalidInput(f"trigger {name} accepts events of type {trigger.event!r}, not {event.type!r}")
    if trigger.action == "resume" and not isinstance(event.data.get(trigger.correlation or ""), str | int):
        raise InvalidInput(f"trigger {name} needs data.{trigger.correlation} (the correlation key)")

    redis, prefix = engine.redis, engine.settings.key_prefix
    claim = f"{prefix}trig:{trigger.tenant}:{name}:{event.id}"
    base = {"trigger": name, "event_id": event.id, "action": trigger.action}
    if not await redis.set(claim, b"handling", nx=True, ex=CLAIM_S):
        previous = await redis.get(claim)
        earlier = (
            jsonutil.loads(previous) if previous and previous != b"handling" else {"outcome": "handling"}
        )
        return JSONResponse({**base, **earlier, "duplicate": True}, status_code=202)
    token = otel_context.attach(propagate.extract(request.headers))
    try:
        if trigger.action == "start":
            result = await _start(engine, request, trigger, event)
        else:
            result = await _resume(engine, trigger, event)
    except BaseException:
        await redis.delete(claim)  # not handled: the sender's retry is handled afresh
        raise
    finally:
        otel_context.detach(token)
    await redis.set(claim, jsonutil.dumps(result), ex=trigger.dedupe_ttl_s)
    return JSONResponse({**base, **result, "duplicate": False}, status_code=202)


async def _start(engine: Engine, request: Request, trigger: TriggerConfig, event: Event) -> dict[str, Any]:
    assert trigger.graph_id is not None
    thread_id = str(uuid.uuid5(_THREADS, f"{trigger.tenant}/{trigger.name}/{event.id}"))
    if await engine.store.get_thread(thread_id) is not None:
        earlier = await engine.store.list_runs(thread_id, limit=1)
        if earlier:  # a previous delivery got this far before its claim expired
            return {"outcome": "started", "thread_id": thread_id, "run_id": earlier[0]["run_id"]}
    system = Principal(
        tenant=trigger.tenant, roles=("operator",), key_id="system", name=f"trigger:{trigger.name}"
    )
    body = RunCreate(
        assistant_id=trigger.graph_id,
        input=event.data,
        if_not_exists="create",
        metadata={"trigger": trigger.name, "event_id": event.id, "event_type": event.type},
    )
    run_id, _ = await submit_run(engine, request, system, thread_id, body, [])
    return {"outcome": "started", "thread_id": thread_id, "run_id": run_id}


async def _resume(engine: Engine, trigger: TriggerConfig, event: Event) -> dict[str, Any]:
    assert trigger.event is not None and trigger.correlation is not None
    key = str(event.data[trigger.correlation])
    value = {
        "event": trigger.event,
        "key": key,
        "event_id": event.id,
        "data": event.data,
        "received_at": now_ms(),
        "via": f"trigger:{trigger.name}",
    }
    return await engine.context.events.deliver(
        trigger.tenant, trigger.event, key, value, actor=f"trigger:{trigger.name}"
    )
