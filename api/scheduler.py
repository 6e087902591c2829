"""The cron scheduler: every API process runs one, and each fire happens once across all.

Crons that will fire sit in one sorted set by next fire time (``store/crons.py``). Each
scheduler reads it once per wake-up (with Redis's clock, so hosts whose clocks disagree
agree on what is due) and sleeps until the earliest entry is due, at most ``MAX_SLEEP_S``:
a cron created or changed meanwhile is seen within that time, for one cheap read a second
per idle process. (Pub/sub could wake it sooner, but would need a connection of its own
and a fallback poll anyway, for messages lost while reconnecting.)

A due cron is fired in three steps: ``claim`` leases that fire (so live schedulers never
work on the same one); the run is created with an id derived from the cron and the fire
time — a second creation of it is refused, so the fire is idempotent; then ``advance``
moves the cron to its next fire time with a compare-and-set on the due score. A scheduler
that dies between the steps leaves a lease that expires after ``FIRE_LEASE_MS``; whoever
takes it over repeats the same fire (its run already exists) and advances. Nothing is
forgotten across restarts: the due set lives in Redis.

Missed fires: after downtime a cron fires **once**, for the most recent fire time that
passed (not once per missed time), then follows its schedule from now.

A fire's run is started as the cron's tenant with role ``operator`` (key id
``cron:<cron_id>``) and carries ``cron_id`` in its metadata. A thread cron whose thread
is gone is deleted; a cron that can no longer start runs (its assistant or graph is gone,
its input no longer fits the graph) is disabled; both with a log line, never retried in a
loop. A thread cron on a busy thread under ``multitask_strategy="reject"`` skips that fire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from typing import Any

from pydantic import ValidationError

from api.auth import Principal
from api.routes.runs import submit_run
from api.routes.threads import delete_thread_and_checkpoints
from api.schemas import RunCreate, iso
from core.cron import Schedule
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.ids import new_id
from runs.engine import Engine
from store.crons import CronStore

log = logging.getLogger("interlock.crons")

MAX_SLEEP_S = 1.0
"""Longest a scheduler sleeps between looks at the due set."""

FIRE_LEASE_MS = 10_000
"""How long a claimed fire is the claimant's; a fire takes milliseconds, so only a dead
(or paused) scheduler's lease ever runs out."""

BATCH = 100
"""Due crons taken per look."""

_FIRE_NAMESPACE = uuid.UUID("3f1c2d9e-5b7a-4c1e-9a64-2d8f0e6b7c15")


def fire_ids(cron_id: str, fire_at: int) -> tuple[str, str]:
    """``(run_id, thread_id)`` of the fire of ``cron_id`` at ``fire_at`` (ms): the same
    whoever computes them, so a repeated fire finds its run already there. (The thread id
    is used by stateless crons; thread crons run on their thread.)"""
    name = f"{cron_id}@{fire_at}"
    return str(uuid.uuid5(_FIRE_NAMESPACE, name)), str(uuid.uuid5(_FIRE_NAMESPACE, name + "/thread"))


async def fire(engine: Engine, cron: dict[str, Any], fire_at: int) -> tuple[str, str, bool]:
    """Start the run of ``cron``'s fire at ``fire_at``, unless it exists already.

    Returns ``(thread_id, run_id, created)``. Raises NotFound (thread or assistant gone),
    InvalidInput (the run would be refused), or Conflict (a busy thread under ``reject``).
    """
    cron_id, tenant = cron["cron_id"], cron["tenant"]
    run_id, own_thread = fire_ids(cron_id, fire_at)
    principal = Principal(tenant=tenant, roles=("operator",), key_id=f"cron:{cron_id}")
    thread_id = cron["thread_id"] or own_thread
    body = RunCreate.model_validate(
        {
            **cron["payload"],
            "metadata": {**cron["metadata"], "cron_id": cron_id},
            "if_not_exists": "reject",
            "multitask_strategy": cron["payload"].get("multitask_strategy", "enqueue"),
        }
    )
    if cron["thread_id"] is None:
        # The thread first, so that it carries the cron's id (threads.search finds them).
        await engine.store.create_thread(
            thread_id, {"cron_id": cron_id}, if_exists="do_nothing", tenant=tenant
        )
    try:
        await submit_run(engine, None, principal, thread_id, body, body.stream_modes, run_id=run_id)
    except Conflict:
        if await engine.store.get_run(thread_id, run_id) is not None:
            return thread_id, run_id, False  # an earlier attempt created it
        raise
    except (NotFound, InvalidInput, Forbidden):
        if cron["thread_id"] is None:
            with contextlib.suppress(NotFound, Conflict):
                await delete_thread_and_checkpoints(engine, thread_id, tenant)
        raise
    return thread_id, run_id, True


class CronScheduler:
    """Fires due crons from this process until stopped."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.crons = CronStore(engine.redis, prefix=engine.settings.key_prefix)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-12:]}"
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cleanups: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="cron scheduler")

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop after the fire in progress, if any (a fire is not cut in half unless it
        takes longer than ``grace_s``: its lease then lets another scheduler finish it)."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for task in list(self._cleanups):
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = await self.tick()
            except Exception:
                log.exception("cron scheduler: looking for due crons failed; trying again shortly")
                wait = MAX_SLEEP_S
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)

    async def tick(self) -> float:
        """Fire what is due now; returns how long to sleep before the next look."""
        poll = await self.crons.poll(BATCH)
        fired = 0
        for cron_id, due in poll.due:
            if self._stop.is_set():
                return 0
            try:
                fired += await self.fire_due(cron_id, due, poll.now)
            except Exception:
                # The lease stays until it expires: a failing cron is retried then, not in a loop.
                log.exception(
                    "cron %s: fire due at %s failed; retrying after the lease expires", cron_id, due
                )
        if fired:
            return 0  # look again at once: more may be due
        if poll.due or poll.earliest is None:
            return MAX_SLEEP_S  # due but taken by another scheduler, or nothing scheduled
        return min(MAX_SLEEP_S, max(0.0, (poll.earliest - poll.now) / 1000))

    async def fire_due(self, cron_id: str, due: int, now: int) -> int:
        """Fire ``cron_id`` if its entry ``due`` is ours to fire. Returns 1 when it was."""
        cron = await self.crons.get(cron_id)
        if cron is None:
            await self.crons.advance(cron_id, due, None)
            return 0
        try:
            schedule = Schedule.parse(cron["schedule"], cron["timezone"])
        except InvalidInput as e:
            log.warning("cron %s disabled: its schedule cannot be read (%s)", cron_id, e.message)
            await self.crons.disable(cron_id)
            return 0
        # Missed fires while nothing ran: one fire, for the most recent time that passed.
        fire_at = max(due, schedule.latest_at_or_before(now))
        end = cron["end_time"]
        if end is not None and fire_at > end:
            if await self.crons.advance(cron_id, due, None):
                log.info("cron %s ended (end_time passed)", cron_id)
            return 0
        claimed = await self.crons.claim(
            cron_id, due, fire_at, owner=self.owner, now=now, lease_ms=FIRE_LEASE_MS
        )
        if claimed is None:
            return 0
        if await self._fire(cron, claimed):
            following = schedule.next_after(max(now, claimed))
            await self.crons.advance(cron_id, due, None if end is not None and following > end else following)
        return 1

    async def _fire(self, cron: dict[str, Any], fire_at: int) -> bool:
        """Start the fire's run; False when the cron was deleted or disabled instead."""
        cron_id = cron["cron_id"]
        try:
            thread_id, run_id, created = await fire(self.engine, cron, fire_at)
        except NotFound as e:
            thread_id = cron["thread_id"]
            if (
                thread_id is not None
                and await self.engine.store.get_thread(thread_id, cron["tenant"]) is None
            ):
                log.warning("cron %s deleted: its thread %s no longer exists", cron_id, cron["thread_id"])
                await self.crons.delete(cron_id, None)
            else:
                log.warning("cron %s disabled: %s", cron_id, e.message)
                await self.crons.disable(cron_id)
            return False
        except (InvalidInput, Forbidden, ValidationError) as e:
            log.warning("cron %s disabled: its runs are refused (%s)", cron_id, getattr(e, "message", e))
            await self.crons.disable(cron_id)
            return False
        except Conflict as e:
            log.info("cron %s: fire for %s skipped (%s)", cron_id, iso(fire_at), e.message)
            return True
        log.info(
            "cron %s fired for %s: run %s on thread %s%s",
            cron_id,
            iso(fire_at),
            run_id,
            thread_id,
            "" if created else " (created by an earlier attempt)",
        )
        if cron["thread_id"] is None and cron["on_run_completed"] != "keep":
            task = asyncio.create_task(self._delete_when_done(thread_id, run_id, cron["tenant"]))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
        return True

    async def _delete_when_done(self, thread_id: str, run_id: str, tenant: str) -> None:
        """A stateless cron's thread goes when its run ends (as for stateless runs: if this
        process stops first, the thread stays, which loses nothing)."""
        try:
            await self.engine.store.wait_for_end(thread_id, run_id)
            await delete_thread_and_checkpoints(self.engine, thread_id, tenant)
        except (NotFound, Conflict) as e:
            log.info("cron thread %s not deleted: %s", thread_id, e.message)
