"""Crons: runs started on a schedule (``api/scheduler.py`` fires them).

``POST /runs/crons`` makes a stateless cron: each fire runs on a new thread of its own,
deleted after the run unless ``on_run_completed="keep"``. ``POST /threads/{id}/runs/crons``
makes one whose fires all run on that thread, queued behind its active run (multitask
strategy ``enqueue`` unless told otherwise). Schedules are 5-field cron expressions read
in ``timezone`` (an IANA name, UTC by default; ``core/cron.py``).

Everything a fire needs is checked when the cron is made (schedule, timezone, end time,
assistant, input against the graph, thread), so a bad cron is a 4xx with nothing stored
rather than a failure at every fire. Records live in ``store/crons.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import Principal, PrincipalDep
from api.deps import EngineDep
from api.routes.assistants import resolve_assistant_async

# The same check a run's input gets when the run is created (it is private to that module).
from api.routes.runs import check_input
from api.routes.threads import require_thread
from api.schemas import SortOrder, iso, page_headers, selected
from core import jsonutil
from core.cron import Schedule
from core.errors import InvalidInput, NotFound
from core.ids import new_id, now_ms
from runs.engine import Engine
from runs.payload import StreamMode
from store.crons import CronFilter, CronSortBy, CronStore

router = APIRouter(tags=["crons"])

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CronField = Literal[
    "cron_id", "assistant_id", "thread_id", "end_time", "schedule", "timezone", "created_at",
    "updated_at", "user_id", "payload", "next_run_date", "metadata", "now", "on_run_completed",
    "enabled",
]  # fmt: skip

RUN_FIELDS = (
    "input", "config", "context", "interrupt_before", "interrupt_after", "webhook",
    "multitask_strategy", "stream_mode", "stream_subgraphs", "stream_resumable", "durability",
)  # fmt: skip
"""The fields of a cron body that go into every run it starts (its ``payload``)."""


class _CronFields(BaseModel):
    """Fields of both create and update bodies; those in ``RUN_FIELDS`` are what each run
    of the cron starts with (typed as in ``RunCreate``)."""

    model_config = ConfigDict(extra="ignore")

    input: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    """The cron's metadata; every run it starts carries it, plus ``cron_id``."""
    interrupt_before: Literal["*"] | list[str] | None = None
    interrupt_after: Literal["*"] | list[str] | None = None
    webhook: str | None = None
    stream_mode: StreamMode | list[StreamMode] | None = None
    stream_subgraphs: bool | None = None
    stream_resumable: bool | None = None
    durability: Literal["sync", "async", "exit"] | None = None
    end_time: datetime | None = None
    """When to stop firing; without a UTC offset it is read as UTC."""
    timezone: str | None = None
    """IANA timezone of the schedule (UTC when unset)."""
    on_run_completed: Literal["delete", "keep"] | None = None
    """Stateless crons only: delete each fire's thread after its run (default) or keep it."""

    @model_validator(mode="after")
    def _config_shape(self) -> _CronFields:
        if self.config and not isinstance(self.config.get("configurable", {}), dict):
            raise ValueError("config.configurable must be an object")
        return self


class CronCreate(_CronFields):
    """Body of ``POST /runs/crons`` and ``POST /threads/{id}/runs/crons``."""

    assistant_id: str
    schedule: str
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] = "enqueue"
    enabled: bool = True


class CronPatch(_CronFields):
    """Body of ``PATCH /runs/crons/{id}``: each field sent replaces the cron's (``metadata``
    is merged; ``end_time: null`` clears the end)."""

    schedule: str | None = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] | None = None
    enabled: bool | None = None


class CronCount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    assistant_id: str | None = None
    """An assistant id or a graph id."""
    thread_id: str | None = None
    enabled: bool | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class CronSearch(CronCount):
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0)
    sort_by: CronSortBy = "created_at"
    sort_order: SortOrder = "desc"
    select: list[CronField] | None = None


def get_crons(engine: Engine) -> CronStore:
    return CronStore(engine.redis, prefix=engine.settings.key_prefix)


async def _crons_dep(engine: EngineDep) -> CronStore:
    return get_crons(engine)  # async: sync dependencies run in a thread pool


CronsDep = Annotated[CronStore, Depends(_crons_dep)]


def cron_view(cron: dict[str, Any]) -> dict[str, Any]:
    return {
        "cron_id": cron["cron_id"],
        "assistant_id": cron["assistant_id"],
        "thread_id": cron["thread_id"],
        "on_run_completed": cron["on_run_completed"],
        "end_time": iso(cron["end_time"]),
        "schedule": cron["schedule"],
        "timezone": cron["timezone"],
        "created_at": iso(cron["created_at"]),
        "updated_at": iso(cron["updated_at"]),
        "payload": cron["payload"],
        "user_id": cron["user_id"],
        "next_run_date": iso(cron["next_run"]),
        "metadata": cron["metadata"],
        "enabled": cron["enabled"],
    }


def _end_ms(end_time: datetime | None, now: int) -> int | None:
    if end_time is None:
        return None
    if end_time.tzinfo is None:
        end_time = end_time.replace(tzinfo=UTC)
    end = (end_time - _EPOCH) // timedelta(milliseconds=1)  # exact: no float rounding
    if end <= now:
        raise InvalidInput(f"end_time {end_time.isoformat()} is in the past; the cron would never fire")
    return end


def _check_storable(body: BaseModel) -> None:
    """Refuse what JSON can carry but the store cannot write (integers beyond 64 bits,
    refused by ``jsonutil.dumps`` as ``InvalidInput``) before anything is written."""
    jsonutil.dumps(body.model_dump(mode="json"))


def _next_fire(schedule: Schedule, end: int | None, now: int) -> int | None:
    """The first fire after ``now``, or None when ``end`` comes first."""
    first = schedule.next_after(now)
    return None if end is not None and first > end else first


async def _create(
    engine: Engine, crons: CronStore, principal: Principal, body: CronCreate, thread_id: str | None
) -> dict[str, Any]:
    _check_storable(body)
    now = now_ms()
    schedule = Schedule.parse(body.schedule, body.timezone)
    end = _end_ms(body.end_time, now)
    first = _next_fire(schedule, end, now)
    if first is None:
        raise InvalidInput(
            f"schedule '{body.schedule}' has no fire time before end_time; the cron would never fire"
        )
    if body.input is None:
        raise InvalidInput("send 'input': every run the cron starts begins the graph with it")
    if thread_id is not None and body.on_run_completed is not None:
        raise InvalidInput("on_run_completed applies to stateless crons (POST /runs/crons) only")
    assistant = await resolve_assistant_async(engine, body.assistant_id, principal.tenant)
    check_input(engine, assistant["graph_id"], body.input)
    if thread_id is not None:
        await require_thread(engine, thread_id, principal.tenant)
    payload = {
        "assistant_id": body.assistant_id,
        **body.model_dump(include=set(RUN_FIELDS), exclude_none=True),
    }
    record = {
        "cron_id": new_id(),
        "tenant": principal.tenant,
        "assistant_id": assistant["assistant_id"],
        "graph_id": assistant["graph_id"],
        "thread_id": thread_id,
        "schedule": body.schedule,
        "timezone": body.timezone,
        "end_time": end,
        "enabled": body.enabled,
        "on_run_completed": (body.on_run_completed or "delete") if thread_id is None else None,
        "payload": payload,
        "metadata": body.metadata or {},
        "user_id": principal.key_id,
        "created_at": now,
        "updated_at": now,
    }
    await crons.create(record, first if body.enabled else None)
    found = await crons.get(record["cron_id"])
    assert found is not None
    return cron_view(found)


@router.post("/runs/crons")
async def create_cron(
    body: CronCreate, engine: EngineDep, crons: CronsDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await _create(engine, crons, principal, body, None)


@router.post("/threads/{thread_id}/runs/crons")
async def create_thread_cron(
    thread_id: str, body: CronCreate, engine: EngineDep, crons: CronsDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await _create(engine, crons, principal, body, thread_id)


def _filter(body: CronCount, tenant: str) -> CronFilter:
    return CronFilter(
        tenant=tenant,
        assistant_id=body.assistant_id,
        thread_id=body.thread_id,
        enabled=body.enabled,
        metadata=body.metadata,
    )


@router.post("/runs/crons/search")
async def search_crons(
    body: CronSearch, crons: CronsDep, response: Response, principal: PrincipalDep
) -> list[dict[str, Any]]:
    page, total = await crons.search(
        _filter(body, principal.tenant),
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by,
        sort_order=body.sort_order,
    )
    page_headers(response, total=total, offset=body.offset, limit=body.limit)
    return selected([cron_view(c) for c in page], body.select)


@router.post("/runs/crons/count")
async def count_crons(body: CronCount, crons: CronsDep, principal: PrincipalDep) -> int:
    return await crons.count(_filter(body, principal.tenant))


def _not_found(cron_id: str) -> NotFound:
    return NotFound(f"cron {cron_id} not found")


@router.patch("/runs/crons/{cron_id}")
async def update_cron(
    cron_id: str, body: CronPatch, engine: EngineDep, crons: CronsDep, principal: PrincipalDep
) -> dict[str, Any]:
    sent = body.model_fields_set
    _check_storable(body)
    current = await crons.get(cron_id, principal.tenant)
    if current is None:
        raise _not_found(cron_id)
    if body.on_run_completed is not None and current["thread_id"] is not None:
        raise InvalidInput("on_run_completed applies to stateless crons (POST /runs/crons) only")
    if body.input is not None:
        check_input(engine, current["graph_id"], body.input)
    now = now_ms()
    end_given = _end_ms(body.end_time, now) if "end_time" in sent else None

    def change(cron: dict[str, Any]) -> tuple[dict[str, Any], int | Literal["keep"] | None]:
        timezone = body.timezone if body.timezone is not None else cron["timezone"]
        schedule_text = body.schedule if body.schedule is not None else cron["schedule"]
        schedule = Schedule.parse(schedule_text, timezone)
        end = end_given if "end_time" in sent else cron["end_time"]
        enabled = body.enabled if body.enabled is not None else cron["enabled"]
        runs = body.model_dump(include=set(RUN_FIELDS), exclude_none=True)
        fields: dict[str, Any] = {
            "schedule": schedule_text,
            "timezone": timezone,
            "end_time": end,
            "enabled": enabled,
            "payload": {**cron["payload"], **runs},
            "metadata": {**cron["metadata"], **(body.metadata or {})},
            "on_run_completed": body.on_run_completed or cron["on_run_completed"],
            "updated_at": now,
        }
        timing = ("schedule", "timezone", "end_time", "enabled")
        if all(fields[f] == cron[f] for f in timing):
            return fields, "keep"  # a fire due right now is not skipped by an unrelated change
        return fields, _next_fire(schedule, end, now) if enabled else None

    updated = await crons.update(cron_id, principal.tenant, change)
    if updated is None:
        raise _not_found(cron_id)
    return cron_view(updated)


@router.delete("/runs/crons/{cron_id}", status_code=204)
async def delete_cron(cron_id: str, crons: CronsDep, principal: PrincipalDep) -> Response:
    """Delete the cron: it fires no more from this moment (a fire already being created
    in this very instant may still start its run)."""
    if not await crons.delete(cron_id, principal.tenant):
        raise _not_found(cron_id)
    return Response(status_code=204)
