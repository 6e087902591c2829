"""Workers: take runs from the Redis queue, execute their graph, publish events, record
the outcome.

A worker blocks on the queue (``XREADGROUP … BLOCK``), never polls. It executes up to
``concurrency`` runs at once on one event loop. Events are coalesced: while one batch is
on its way to Redis, the next accumulates, so a fast graph costs one round trip per batch
rather than per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from opentelemetry import propagate
from opentelemetry.trace import Status, StatusCode

from agents.context import Context
from core import jsonutil
from core.errors import FENCE_CONFIG_KEY, FencedOut
from core.ids import new_id, now_ms
from core.spans import HotTracer
from runs.compile import CompiledGraph
from runs.payload import RunPayload
from runs.segment import Segment, root_span_arguments
from store.approvals import ApprovalStore, approval_id
from store.checkpoint import AsyncRedisSaver
from store.runs import QueuedRun, RunStatus, RunStore, ThreadStatus

log = logging.getLogger("interlock.worker")
_tracer = HotTracer("interlock.runs")


class EventSink:
    """Publishes a run's events in order, batching those that arrive while a write is
    in flight."""

    def __init__(self, store: RunStore, thread_id: str, run_id: str) -> None:
        self._store = store
        self._thread_id = thread_id
        self._run_id = run_id
        self._buffer: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._task = asyncio.create_task(self._drain())

    def emit(self, event: str, data: Any) -> None:
        self._buffer.append((event, jsonutil.dumps(data)))
        self._wake.set()

    async def _drain(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                batch, self._buffer = self._buffer, []
                await self._store.publish(self._thread_id, self._run_id, batch)
            if self._closed:
                return

    async def abandon(self) -> None:
        """Flush what can be flushed, and never raise (the run is being given up)."""
        try:
            await asyncio.wait_for(self.close(), timeout=2)
        except BaseException:
            self._task.cancel()

    async def close(self) -> None:
        """Flush everything emitted so far."""
        self._closed = True
        self._wake.set()
        await self._task


async def _flush(graph: CompiledGraph, thread_id: str, *, read_latest: bool = False) -> None:
    saver = graph.checkpointer
    if isinstance(saver, AsyncRedisSaver):
        await saver.aflush(thread_id, read_latest=read_latest)


def _event_name(mode: str, namespace: tuple[str, ...]) -> str:
    mode = "messages" if mode == "messages-tuple" else mode
    return f"{mode}|{'|'.join(namespace)}" if namespace else mode


def _interrupts(snapshot: Any) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for task in snapshot.tasks:
        if task.interrupts:
            found[task.id] = [{"value": i.value, "id": i.id} for i in task.interrupts]
    return found


def _approvals(snapshot: Any, payload: RunPayload, thread_id: str, run_id: str) -> list[dict[str, Any]]:
    """An approval for every pending interrupt whose value is an approval request."""
    now = now_ms()
    found = []
    for task in snapshot.tasks:
        for intr in task.interrupts:
            request = intr.value
            if not (isinstance(request, dict) and request.get("type") == "approval"):
                continue
            deadline_s = request.get("deadline_s")
            found.append(
                {
                    "id": approval_id(thread_id, intr.id),
                    "interrupt_id": intr.id,
                    "tenant": payload.tenant,
                    "thread_id": thread_id,
                    "run_id": run_id,
                    "graph_id": payload.graph_id,
                    "assistant_id": payload.assistant_id,
                    "node": task.name,
                    "task_id": task.id,
                    "request": request,
                    "assignee": request.get("assignee", "approver"),
                    "requested_at": now,
                    "deadline_at": now + int(deadline_s * 1000) if deadline_s is not None else None,
                }
            )
    return found


@dataclass(frozen=True)
class Outcome:
    """How a run ended, ready to be recorded."""

    run_status: RunStatus
    thread_status: ThreadStatus
    values: Any
    interrupts: dict[str, list[dict[str, Any]]]
    end: dict[str, Any]
    error: Exception | None = None
    approvals: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """The approval steps the run pauses on (``store/approvals.py``)."""


class Worker:
    """Executes queued runs. Any number of workers, in any processes, may share one Redis.

    A worker owns a run by its queue entry: it takes new entries with ``XREADGROUP``
    (blocking), keeps the ones it executes alive with a heartbeat (``XCLAIM`` to itself
    every ``lease_ms / 3``), and takes over entries of workers that stopped heartbeating
    for ``lease_ms`` (``XAUTOCLAIM``). Each take-over bumps the run's epoch and the
    thread's fence, so a worker that was merely paused cannot write after it wakes up.
    """

    def __init__(
        self,
        store: RunStore,
        graphs: Mapping[str, CompiledGraph],
        context: Context,
        approvals: ApprovalStore,
        *,
        concurrency: int = 16,
        lease_ms: int = 30_000,
        run_timeout_s: float | None = None,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.approvals = approvals
        self.graphs = graphs
        self.context = context
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.run_timeout_s = run_timeout_s
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{new_id()[-8:]}"
        self._tasks: dict[asyncio.Task[None], QueuedRun] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name=f"worker {self.name}")
        self._lease_task = asyncio.create_task(self._leases(), name=f"leases {self.name}")

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop taking runs; give those in flight ``grace_s`` to finish, then hand the
        rest back (their queue entries are marked idle, so another worker takes them
        over at once and resumes them from their last checkpoint)."""
        for task in (self._loop_task, self._lease_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._tasks and grace_s > 0:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        left = dict(self._tasks)
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.store.hand_back(self.name, [i.message_id for i in left.values()], self.lease_ms)
            log.info("worker %s handed back %d run(s)", self.name, len(left))

    def _spawn(self, item: QueuedRun) -> None:
        task = asyncio.create_task(self._execute_logged(item), name=f"run {item.run_id}")
        self._tasks[task] = item
        task.add_done_callback(lambda t: self._tasks.pop(t, None))

    async def _loop(self) -> None:
        await self.store.setup()
        while True:
            free = self.concurrency - len(self._tasks)
            if free <= 0:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                items = await self.store.claim(self.name, free, block_ms=5_000)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming runs failed; retrying in 1 s")
                await asyncio.sleep(1)
                continue
            for item in items:
                self._spawn(item)

    async def _leases(self) -> None:
        """Heartbeat our runs; take over runs whose worker went quiet."""
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                await self.store.heartbeat(self.name, [i.message_id for i in self._tasks.values()])
                free = self.concurrency - len(self._tasks)
                if free > 0:
                    for item in await self.store.reclaim(self.name, self.lease_ms, free):
                        log.warning("worker %s takes over run %s", self.name, item.run_id)
                        self._spawn(item)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat/reclaim failed; trying again next period")

    async def _execute_logged(self, item: QueuedRun) -> None:
        try:
            if item.kind == "rollback":
                await self.roll_back(item)
            else:
                await self.execute(item)
        except asyncio.CancelledError:
            raise
        except FencedOut:
            log.warning("run %s: worker %s lost ownership and stopped", item.run_id, self.name)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.warning(
                "run %s: Redis unavailable (%s); it will be taken over after the lease", item.run_id, e
            )
        except Exception:
            log.exception("run %s could not be recorded", item.run_id)

    async def roll_back(self, item: QueuedRun) -> None:
        """Undo a cancelled run (``action=rollback`` or multitask ``rollback``): delete its
        checkpoints and the writes it added, give the thread the state it had before, delete
        the run, start the thread's next run. Its former owner is already fenced out, and
        every step is idempotent, so a rollback taken over after a crash is done again."""
        thread_id, run_id = item.thread_id, item.run_id
        run = await self.store.get_run(thread_id, run_id)
        graph = self.graphs.get(run["graph_id"]) if run else None
        if run is None or graph is None:
            if run is not None:
                log.error("rollback of run %s: graph %s is not registered here", run_id, run["graph_id"])
            await self.store.ack(item.message_id)
            return
        saver = graph.checkpointer
        assert isinstance(saver, AsyncRedisSaver)
        await saver.arollback_run(thread_id, run_id, await self.store.rollback_base(thread_id, run_id))
        snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        interrupts = _interrupts(snapshot) if snapshot.config else {}
        await self.store.rollback_done(
            thread_id=thread_id,
            run_id=run_id,
            message_id=item.message_id,
            thread_status="interrupted" if interrupts else "idle",
            values=snapshot.values if snapshot.config else None,
            interrupts=interrupts,
        )
        log.info("run %s on thread %s rolled back", run_id, thread_id)

    async def execute(self, item: QueuedRun) -> None:
        """Execute one run to its end (success, error or interrupt) and record it.

        The run's span ends before the outcome is recorded, so whoever sees the run
        finished can also find its whole trace.
        """
        payload = RunPayload.model_validate(item.payload)
        thread_id, run_id = item.thread_id, item.run_id
        parent = propagate.extract(payload.trace_context) if payload.trace_context else None
        with _tracer.start_as_current_span(
            f"invoke_workflow {payload.graph_id}",
            context=parent,
            record_exception=False,
            set_status_on_exception=False,
            **root_span_arguments(payload, run_id, thread_id),
        ) as span:
            claim = await self.store.claim_run(thread_id, run_id, self.name)
            if claim is None:  # it ended while its entry waited: nothing left to do
                await self.store.ack(item.message_id)
                return
            token = claim.token
            attempt = int(token.rsplit(":", 1)[1])
            span.set_attribute("interlock.run.attempt", attempt)
            segment = Segment(span, payload, thread_id, attempt=attempt).begin(
                int(item.message_id.split("-")[0])
            )
            sink = EventSink(self.store, thread_id, run_id)
            try:
                outcome = await self._run_graph(payload, thread_id, run_id, token, sink, claim.empty_thread)
            except BaseException:
                segment.end()
                await sink.abandon()
                raise
            if outcome.error is not None:
                span.record_exception(outcome.error)
                span.set_status(Status(StatusCode.ERROR, f"{type(outcome.error).__name__}: {outcome.error}"))
                sink.emit("error", outcome.end["error"])
            await sink.close()
            segment.end(outcome.run_status, outcome.end.get("interrupts") or [])
        if outcome.approvals:
            # Before the outcome: a take-over after a crash in between re-runs the step,
            # pauses on the same interrupts and records them again (idempotent).
            await self.approvals.record(outcome.approvals)
        recorded = await self.store.finish_run(
            thread_id=thread_id,
            run_id=run_id,
            message_id=item.message_id,
            run_status=outcome.run_status,
            thread_status=outcome.thread_status,
            values=outcome.values,
            interrupts=outcome.interrupts,
            end=outcome.end,
            token=token,
            trace=segment.link_record(),
        )
        if recorded:
            segment.recorded(outcome.run_status, len(outcome.end.get("interrupts") or []))
        if not recorded:
            log.warning("run %s: worker %s lost ownership; its outcome was not recorded", run_id, self.name)

    async def _run_graph(
        self,
        payload: RunPayload,
        thread_id: str,
        run_id: str,
        token: str,
        sink: EventSink,
        empty_thread: bool,
    ) -> Outcome:
        graph = self.graphs.get(payload.graph_id)
        thread_config: Any = {"configurable": {"thread_id": thread_id}}
        try:
            if graph is None:
                raise LookupError(f"graph '{payload.graph_id}' is not registered on worker {self.name}")
            config = self._config(payload, thread_id, run_id)
            config["configurable"][FENCE_CONFIG_KEY] = [self.store.keys.fence(thread_id), token]
            resume = await self._resumes(graph, thread_config, run_id, token)
            saver = graph.checkpointer
            if empty_thread and isinstance(saver, AsyncRedisSaver):
                # The claim saw no checkpoint: LangGraph's first read of the thread needs
                # no round trip.
                saver.note_empty(thread_id)
            try:
                try:
                    async with asyncio.timeout(self.run_timeout_s):
                        await self._stream(graph, payload, config, sink, resume=resume)
                except BaseException:
                    with contextlib.suppress(Exception):  # the run ends with its own error
                        await _flush(graph, thread_id)
                    raise
                # The saver writes behind (runs/engine.py): the run's writes are stored, or
                # their failure raised, before anything reads or records them. The last
                # batch reads the final checkpoint back, so the snapshot costs no round trip.
                await _flush(graph, thread_id, read_latest=True)
                snapshot = await graph.aget_state(thread_config)
            finally:
                if isinstance(saver, AsyncRedisSaver):
                    saver.forget_latest(thread_id)
        except (redis.ConnectionError, redis.TimeoutError, FencedOut):
            # Redis went away, or another worker owns the run now: not the run's fault, so
            # no outcome is recorded. Its queue entry stays pending; whoever takes it over
            # (after the lease) resumes it from its last checkpoint.
            raise
        except TimeoutError:
            log.warning("run %s timed out after %s s", run_id, self.run_timeout_s)
            error = {"error": "TimeoutError", "message": f"run exceeded {self.run_timeout_s} s"}
            return Outcome("timeout", "idle", None, {}, {"status": "timeout", "error": error})
        except Exception as exc:
            log.warning("run %s failed: %s: %s", run_id, type(exc).__name__, exc)
            values = None
            if graph is not None:
                with contextlib.suppress(Exception):
                    values = (await graph.aget_state(thread_config)).values
            error = {"error": type(exc).__name__, "message": str(exc)}
            return Outcome("error", "error", values, {}, {"status": "error", "error": error}, exc)
        interrupts = _interrupts(snapshot)
        if interrupts:
            flat = [i for group in interrupts.values() for i in group]
            end = {"status": "interrupted", "values": snapshot.values, "interrupts": flat}
            approvals = _approvals(snapshot, payload, thread_id, run_id)
            return Outcome(
                "interrupted", "interrupted", snapshot.values, interrupts, end, approvals=approvals
            )
        end = {"status": "success", "values": snapshot.values}
        return Outcome("success", "idle", snapshot.values, {}, end)

    def _config(self, payload: RunPayload, thread_id: str, run_id: str) -> dict[str, Any]:
        config = dict(payload.config)
        configurable = dict(config.get("configurable") or {})
        configurable["thread_id"] = thread_id
        if payload.checkpoint_id:
            configurable["checkpoint_id"] = payload.checkpoint_id
        config["configurable"] = configurable
        config["metadata"] = {
            **payload.metadata,
            "run_id": run_id,
            "graph_id": payload.graph_id,
            "assistant_id": payload.assistant_id,
            "tenant": payload.tenant,
        }
        return config

    @staticmethod
    async def _resumes(graph: CompiledGraph, thread_config: Any, run_id: str, token: str) -> bool:
        """Whether this is a take-over of a run that already checkpointed: then it goes on
        from its last checkpoint instead of starting again from its input."""
        if token.endswith(":1"):
            return False
        snapshot = await graph.aget_state(thread_config)
        return bool(snapshot.metadata and snapshot.metadata.get("run_id") == run_id)

    async def _stream(
        self,
        graph: CompiledGraph,
        payload: RunPayload,
        config: dict[str, Any],
        sink: EventSink,
        *,
        resume: bool = False,
    ) -> None:
        wanted = list(dict.fromkeys("messages" if m == "messages-tuple" else m for m in payload.stream_mode))
        # Nothing wanted (``runs.wait``, a run nobody streams): no stream mode at all, so
        # LangGraph makes no chunk. Each one costs a copy of the state and a cross-thread
        # wake-up of the event loop (LangGraph queues chunks by ``call_soon_threadsafe``).
        modes = wanted
        graph_input: Any
        if resume:
            graph_input = None
        elif payload.command is not None:
            graph_input = Command(
                resume=payload.command.resume,
                update=payload.command.update,
                goto=payload.command.goto or (),
            )
        else:
            graph_input = payload.input
        context: Any = self.context if graph.builder.context_schema is Context else payload.context
        options: dict[str, Any] = {
            "context": context,
            "subgraphs": True,
            "interrupt_before": payload.interrupt_before,
            "interrupt_after": payload.interrupt_after,
            # LangGraph's default, said explicitly: the saver then knows a step's writes may
            # travel with the checkpoint that follows them (store/checkpoint.py).
            "durability": payload.durability or "async",
        }
        if "events" in modes:
            await self._stream_events(graph, graph_input, config, options, modes, payload, sink)
            return
        stream: Any = graph.astream(
            graph_input, cast(RunnableConfig, config), stream_mode=cast(Any, modes), **options
        )
        async for ns, mode, chunk in stream:
            if not wanted or (ns and not payload.stream_subgraphs):
                continue
            sink.emit(_event_name(mode, ns), chunk)

    @staticmethod
    async def _stream_events(
        graph: CompiledGraph,
        graph_input: Any,
        config: dict[str, Any],
        options: dict[str, Any],
        modes: Sequence[str],
        payload: RunPayload,
        sink: EventSink,
    ) -> None:
        """Stream mode ``events``: every LangChain callback event (``on_chain_start``,
        ``on_chat_model_stream``…, as ``astream_events`` v2 gives them). The graph's own
        stream chunks arrive inside them; those of the other requested modes are
        published as their own events too."""
        others = [m for m in modes if m != "events"] or ["values"]
        events: Any = graph.astream_events(
            graph_input, cast(RunnableConfig, config), version="v2", stream_mode=others, **options
        )
        async for event in events:
            chunk = event.get("data", {}).get("chunk")
            if (
                event["event"] == "on_chain_stream"
                and not event.get("parent_ids")
                and isinstance(chunk, tuple)
            ):
                ns, mode, data = chunk
                if mode in modes and (not ns or payload.stream_subgraphs):
                    sink.emit(_event_name(mode, ns), data)
                continue
            sink.emit("events", event)
