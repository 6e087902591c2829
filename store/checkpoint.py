r"""LangGraph checkpointer on plain Redis 6.2+: hashes, sorted sets and Lua, nothing else.

Key layout. ``P`` is the prefix (default ``il:``), ``T`` the thread id, ``ns`` the checkpoint
namespace (``""`` for the root graph, ``node:task|…`` for subgraphs); ``\0`` and ``\1``
separate the parts of a field, so namespaces, channel names and versions must not contain
them.

| key            | type | field or member → value                                          |
| -------------- | ---- | ---------------------------------------------------------------- |
| ``P cp:{T}:i`` | zset | ``ns\0checkpoint_id``, score 0: the thread's checkpoints         |
| ``P cp:{T}:c`` | hash | ``ns\0checkpoint_id`` → ``parent_id\0run_id\0metadata\0type\0doc``: |
|                |      | the checkpoint without channel values (serde), metadata as JSON  |
| ``P cp:{T}:r`` | hash | ``ns\0checkpoint_id`` → ``channel\0version\1channel\0version…``: |
|                |      | the blobs the checkpoint is made of, in a form Lua can split     |
| ``P cp:{T}:b`` | hash | ``ns\0channel\0version`` → ``type\0bytes`` (serde), or empty     |
|                |      | when the channel has no value at that version                    |
| ``P cp:{T}:x`` | zset | ``ns\0checkpoint_id\0task_id\0idx``, score 0: the pending writes |
| ``P cp:{T}:w`` | hash | ``x`` member → ``task_id\0idx\0task_path\0channel\0type\0bytes`` |

Why this shape:

- Every key embeds ``{T}``, a Redis Cluster hash tag: a thread's keys share one slot, so each
  Lua script can read and write all of them atomically.
- A thread has a fixed set of six keys, not a key per checkpoint, so every script can name
  its keys in ``KEYS`` up front, even "load the latest checkpoint", and deleting a thread is
  one ``DEL``.
- Scores are all 0, so the sorted sets order by member bytes: ``(namespace, checkpoint_id)``,
  and checkpoint ids (uuid6) sort by creation. "Latest in a namespace", "before X" and "the
  writes of one checkpoint" are each one ``Z[REV]RANGEBYLEX``.
- Channel values are stored once per ``(namespace, channel, version)`` (like Postgres'
  ``checkpoint_blobs``): a checkpoint writes blobs only for the channels that changed
  (``new_versions``) and refers to the rest.
- Every write of a thread (checkpoints and tasks' writes) goes through the thread's
  outbox: one ``EVALSHA`` of :data:`store.checkpoint_lua.WRITE` sends whatever has
  gathered, and while it is on its way the next batch gathers. Writes reach Redis in the
  order they were made and each batch is atomic, so what is stored is always a prefix of
  what the graph wrote: a step's writes and the checkpoint that follows them can no longer
  be reordered (langgraph#8039), and a fast graph costs one round trip per batch, not two
  per step. With ``write_behind_s`` set (the worker's saver), a ``durability="async"`` write
  returns once it is queued and waits up to that long for the writes that follow it
  (group commit): LangGraph's loop, which chains each checkpoint behind the previous one,
  no longer waits a round trip per step, a quick run's steps go to Redis in a batch or two,
  and :meth:`AsyncRedisSaver.aflush` sends and waits for the thread's writes (and reports
  their failure). Reads and deletions of a thread send and wait for the writes queued
  before them. Writes can be fenced: with
  ``config["configurable"]["__interlock_fence__"] = [key, value]`` the script first checks
  ``GET key == value`` and otherwise writes nothing (see :class:`FencedOut`).
  ``aget_tuple`` is one ``EVALSHA``; a run's final one needs none when its last batch
  read the checkpoint back (``aflush(read_latest=True)``).
- Nothing is global: operations across threads (``alist`` without a thread,
  ``adelete_for_runs``) ``SCAN`` for ``P cp:{*}:i``. A global registry would live in
  another slot and cost every ``aput`` a second, non-atomic write.

Deleting checkpoints (``adelete_for_runs``, ``aprune``) also deletes the blobs no remaining
checkpoint refers to, so do not run them on a thread while a run is writing to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final, NamedTuple, cast

import orjson
import redis.asyncio as aredis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from core.errors import FENCE_CONFIG_KEY, FencedOut
from core.redis import Lua, Scripts, make_client
from core.tracing import checkpoint_written
from store.checkpoint_lua import DROP, LOAD, WRITE
from store.keys import check_prefix, escape_glob, hash_tag

# The fence travels in the run config (see core.errors.FENCE_CONFIG_KEY).
"""``config["configurable"]`` key holding ``[fence_key, expected_value]`` for fenced writes."""

_BATCH = 100
"""Checkpoints loaded per round trip by ``alist``."""

_JSON_OPTS: Final = orjson.OPT_NON_STR_KEYS

_DURABILITY = "__pregel_durability"
"""Where LangGraph's loop puts the run's durability in the config of every saver call."""


class _Outbox:
    """Writes of one thread by one owner (fence), in the order they were made: ``queued``
    (ops for the ``WRITE`` script, not sent yet, the first since ``since``) resolve
    ``queued_done``; the batch on its way resolves ``in_flight``. The sender waits on
    ``wake`` for the batching window unless someone waits for the writes (``urgent``).
    ``read_latest``: the next batch also reads the thread's latest root checkpoint
    (:meth:`AsyncRedisSaver.aflush`).
    A failed batch makes the outbox refuse every later write (``failed``): a write after a
    lost one could store a checkpoint whose parent's blobs are missing."""

    __slots__ = (
        "failed",
        "fence",
        "in_flight",
        "keys",
        "queued",
        "queued_done",
        "read_latest",
        "sender",
        "since",
        "thread_id",
        "urgent",
        "wake",
    )

    def __init__(self, thread_id: str, keys: ThreadKeys, fence: tuple[bytes, bytes] | None) -> None:
        self.thread_id = thread_id
        self.keys = keys
        self.fence = fence
        self.queued: list[bytes] = []
        self.queued_done: asyncio.Future[None] | None = None
        self.since = 0.0
        self.in_flight: asyncio.Future[None] | None = None
        self.sender: asyncio.Task[None] | None = None
        self.wake: asyncio.Future[None] | None = None
        self.urgent = False
        self.read_latest = False
        self.failed: BaseException | None = None

    def hurry(self) -> None:
        """Send the queued writes now: someone waits for them."""
        self.urgent = True
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


def _mark_read(future: asyncio.Future[None]) -> None:
    """A batch's outcome may have no reader (write-behind): keep asyncio from logging it."""
    if not future.cancelled():
        future.exception()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ThreadKeys(NamedTuple):
    """The six keys of one thread (see the module docstring)."""

    ids: bytes
    records: bytes
    refs: bytes
    blobs: bytes
    write_ids: bytes
    writes: bytes


def _sync_unsupported(method: str) -> NotImplementedError:
    return NotImplementedError(
        f"AsyncRedisSaver is async-only: call a{method}() (graph.ainvoke / astream / "
        f"aget_state) instead of {method}()"
    )


def _json_roundtrip(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str, option=_JSON_OPTS))


class AsyncRedisSaver(BaseCheckpointSaver[str]):
    """LangGraph checkpointer on plain Redis (6.2+), async only.

    Args:
        client: A ``redis.asyncio.Redis`` that returns bytes (``decode_responses=False``).
        prefix: Start of every key; must not contain ``{`` or ``}``.
        serde: Serializer for checkpoints, channel values and writes; LangGraph's
            ``JsonPlusSerializer`` by default.
        write_behind_s: When set, ``aput``/``aput_writes`` with ``durability="async"``
            return once the write is queued, and it goes to Redis within this many
            seconds (``0``: at once) with whatever else the thread wrote meanwhile;
            whoever runs the graph then calls :meth:`aflush` for the thread, which sends
            and waits for its writes and raises what failed (a failure also makes every
            later write of the thread raise until then). ``None`` (the default): every
            write returns once stored, as LangGraph expects.

    Example:
        ```python
        async with AsyncRedisSaver.from_conn_string("redis://localhost:6379/0") as saver:
            graph = builder.compile(checkpointer=saver)
            await graph.ainvoke(inputs, {"configurable": {"thread_id": "t-1"}})
        ```
    """

    def __init__(
        self,
        client: aredis.Redis,
        *,
        prefix: str = "il:",
        serde: SerializerProtocol | None = None,
        write_behind_s: float | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self.prefix = check_prefix(prefix)
        self._key_head = f"{prefix}cp:{{"
        self._keys_cache: dict[str, ThreadKeys] = {}
        self._fences: dict[tuple[str, Any, Any], tuple[bytes, bytes]] = {}
        self._scripts = Scripts(client)
        if write_behind_s is not None and write_behind_s < 0:
            raise ValueError(f"write_behind_s must be >= 0 or None, not {write_behind_s}")
        self.write_behind_s = write_behind_s
        self._outboxes: dict[tuple[str, tuple[bytes, bytes] | None], _Outbox] = {}
        self._latest_root: dict[str, list[Any] | None] = {}
        """One-shot answers for the next read of a thread's latest root checkpoint: the
        entry a ``WRITE`` read back (:meth:`aflush`), or None for "no checkpoint"
        (:meth:`note_empty`). Any write of the thread drops its answer."""
        self._reading: set[str] = set()
        """Threads whose batch on its way reads back the latest root checkpoint; a write
        made meanwhile voids the read (the answer would miss it)."""

    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(cls, url: str, *, prefix: str = "il:") -> AsyncIterator[AsyncRedisSaver]:
        """Yield a saver on its own client for ``url``; the client is closed on exit."""
        client = make_client(url)
        saver = cls(client, prefix=prefix)
        try:
            yield saver
        finally:
            await saver.aclose()
            await client.aclose()

    # --- keys and scripts ---------------------------------------------------------------

    def thread_keys(self, thread_id: str) -> ThreadKeys:
        """The keys of ``thread_id``, all carrying the hash tag ``{thread_id}``."""
        keys = self._keys_cache.get(thread_id)
        if keys is None:
            if len(self._keys_cache) >= 4096:
                self._keys_cache.clear()
            base = f"{self._key_head}{thread_id}}}:".encode()
            keys = ThreadKeys(*(base + s for s in (b"i", b"c", b"r", b"b", b"x", b"w")))
            self._keys_cache[thread_id] = keys
        return keys

    async def _eval(self, script: Lua, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """``EVALSHA`` in one round trip (``core.redis.Scripts``). A lost connection is
        retried once on a fresh one: every script here is idempotent, so running one
        twice changes nothing."""
        return await self._scripts.run_idempotent(script, keys, args)

    async def aclose(self) -> None:
        """Wait for the queued writes, then return the connections this saver holds to the
        client's pool (the client stays open)."""
        await self._settle()
        await self._scripts.release()

    def _fence(self, configurable: dict[str, Any], thread_id: str) -> tuple[bytes, bytes] | None:
        """``(fence_key, expected_value)`` from the config, checked to share the thread's slot."""
        fence = configurable.get(FENCE_CONFIG_KEY)
        if fence is None:
            return None
        key, expected = fence
        memo = (thread_id, key, expected)
        try:
            found = self._fences.get(memo)  # every write of a run carries the same fence
        except TypeError:  # not hashable: not a fence the worker wrote, checked every time
            return self._check_fence(key, expected, thread_id)
        if found is None:
            if len(self._fences) >= 4096:
                self._fences.clear()
            found = self._fences[memo] = self._check_fence(key, expected, thread_id)
        return found

    def _check_fence(self, key: Any, expected: Any, thread_id: str) -> tuple[bytes, bytes]:
        key = key.decode() if isinstance(key, bytes) else str(key)
        if hash_tag(key) != hash_tag(f"{self._key_head}{thread_id}}}"):
            raise ValueError(f"fence key {key!r} must carry the hash tag {{{thread_id}}} of its thread")
        return key.encode(), expected if isinstance(expected, bytes) else str(expected).encode()

    # --- writes ---------------------------------------------------------------------------

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the blobs of its changed channels, in the thread's next
        batch (see the module docstring).

        Raises:
            FencedOut: the config carries a fence that no longer holds; nothing of the
                batch was written.
        """
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id = checkpoint["id"]
        dumps = self.serde.dumps_typed

        doc: dict[str, Any] = checkpoint.copy()  # type: ignore[assignment]
        values: dict[str, Any] = doc.pop("channel_values")
        md = get_serializable_checkpoint_metadata(config, metadata)
        type_, data = dumps(doc)
        record = b"\0".join(
            (
                (configurable.get("checkpoint_id") or "").encode(),
                str(md.get("run_id") or "").encode(),
                orjson.dumps(md, default=str, option=_JSON_OPTS),
                type_.encode(),
                data,
            )
        )
        refs = "\1".join([f"{ch}\0{ver}" for ch, ver in checkpoint["channel_versions"].items()]).encode()
        ns_b = ns.encode() + b"\0"
        op = [b"c", str(len(new_versions)).encode(), ns_b + checkpoint_id.encode(), record, refs]
        for ch, ver in new_versions.items():
            op.append(ns_b + f"{ch}\0{ver}".encode())
            if ch in values:
                type_, data = dumps(values[ch])
                op.append(type_.encode() + b"\0" + data)
            else:
                op.append(b"")
        await self._write(configurable, thread_id, op)
        checkpoint_written(ns, checkpoint_id, int(metadata.get("step", -1)))
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes, in the thread's next batch.

        A regular write never replaces an existing ``(task_id, idx)``; special writes
        (``ERROR``, ``INTERRUPT``, … with negative indexes) do.

        Raises:
            FencedOut: the config carries a fence that no longer holds; nothing of the
                batch was written.
        """
        if not writes:
            return
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id: str = configurable["checkpoint_id"]
        dumps = self.serde.dumps_typed

        field_head = f"{ns}\0{checkpoint_id}\0{task_id}\0"
        op = [b"w", str(len(writes)).encode()]
        for idx, (channel, value) in enumerate(writes):
            special = WRITES_IDX_MAP.get(channel)
            i = idx if special is None else special
            type_, data = dumps(value)
            op.append(f"{field_head}{i}".encode())
            op.append(f"{task_id}\0{i}\0{task_path}\0{channel}\0{type_}\0".encode() + data)
            op.append(b"0" if special is None else b"1")
        await self._write(configurable, thread_id, op)

    # --- the outbox: a thread's writes, in order, batched ------------------------------------

    async def _write(self, configurable: dict[str, Any], thread_id: str, op: list[bytes]) -> None:
        """Queue ``op`` in the thread's outbox; wait until it is stored unless it may be
        written behind (see ``write_behind_s``)."""
        fence = self._fence(configurable, thread_id) if FENCE_CONFIG_KEY in configurable else None
        if self._latest_root:
            self._latest_root.pop(thread_id, None)
        if self._reading:
            self._reading.discard(thread_id)
        key = (thread_id, fence)
        box = self._outboxes.get(key)
        if box is None:
            box = self._outboxes[key] = _Outbox(thread_id, self.thread_keys(thread_id), fence)
        elif box.failed is not None:
            raise box.failed
        if box.queued_done is None:
            loop = asyncio.get_running_loop()
            box.queued_done = loop.create_future()
            box.queued_done.add_done_callback(_mark_read)
            box.since = loop.time()
        box.queued += op
        done = box.queued_done
        behind = self.write_behind_s is not None and configurable.get(_DURABILITY) == "async"
        if not behind:
            box.hurry()
        if box.sender is None:
            box.sender = asyncio.create_task(self._send(key, box))
        if not behind:
            # Shielded: a caller cancelled while waiting must not cancel the batch's outcome
            # for the other writes in it.
            await asyncio.shield(done)

    async def _send(self, key: tuple[str, tuple[bytes, bytes] | None], box: _Outbox) -> None:
        """Send the outbox's queued writes, batch after batch, until none are left; a
        batch leaves once its first write has waited ``write_behind_s``, or when hurried."""
        fence = box.fence
        keys: Sequence[bytes] = box.keys if fence is None else (*box.keys, fence[0])
        loop = asyncio.get_running_loop()
        window = self.write_behind_s or 0.0
        try:
            while box.queued:
                delay = box.since + window - loop.time()
                if delay > 0 and not box.urgent:
                    box.wake = loop.create_future()
                    timer = loop.call_later(delay, _wake, box.wake)
                    try:
                        await box.wake
                    finally:
                        timer.cancel()
                        box.wake = None
                box.urgent = False
                args, box.queued = box.queued, []
                done, box.queued_done = cast(asyncio.Future[None], box.queued_done), None
                box.in_flight = done
                read = box.read_latest
                if read:
                    box.read_latest = False
                    args += (b"l", b"")
                    self._reading.add(box.thread_id)
                try:
                    reply = await self._eval(WRITE, keys, [b"" if fence is None else fence[1], *args])
                    if not reply:
                        raise self._fenced_out(fence, box.thread_id)
                    if read and box.thread_id in self._reading:
                        self._reading.discard(box.thread_id)
                        self._latest_root[box.thread_id] = reply[1] if len(reply) > 1 else None
                except BaseException as e:
                    self._reading.discard(box.thread_id)
                    box.failed = e
                    for pending in (done, box.queued_done):
                        if pending is not None and not pending.done():
                            pending.set_exception(e)
                    box.queued, box.queued_done = [], None
                    if not isinstance(e, Exception):
                        raise
                    return
                if not done.done():
                    done.set_result(None)
        finally:
            box.sender = box.in_flight = None
            # Written behind, a failure stays on record for ``aflush``; otherwise its
            # writers have it already.
            if (box.failed is None or self.write_behind_s is None) and self._outboxes.get(key) is box:
                del self._outboxes[key]

    async def _settle(self, thread_id: str | None = None) -> None:
        """Send the writes queued so far for ``thread_id`` (None: every thread) and wait
        until they are stored or failed: a read or a deletion must see, or remove, what
        came before it."""
        if not self._outboxes:
            return
        waits = []
        for (t_id, _), box in self._outboxes.items():
            if thread_id is None or t_id == thread_id:
                box.hurry()
                waits += [f for f in (box.in_flight, box.queued_done) if f is not None]
        if waits:
            await asyncio.wait(waits)

    async def astored(self, thread_id: str) -> None:
        """Send the writes queued so far for ``thread_id`` and wait until they are stored.

        With ``write_behind_s``, a step's checkpoint is queued before the step's tasks
        start (LangGraph chains it behind the previous one, which returns at once), so a
        task that calls this knows the checkpoint it started from is stored.

        Raises:
            FencedOut, redis.ConnectionError, …: a write of the thread failed (and stays
                on record for :meth:`aflush`).
        """
        await self._settle(thread_id)
        for (t_id, _), box in self._outboxes.items():
            if t_id == thread_id and box.failed is not None:
                raise box.failed

    def note_empty(self, thread_id: str) -> None:
        """The caller has just seen, atomically with taking the thread (``CLAIM_RUN``),
        that ``thread_id`` has no checkpoint: the next read of its latest root checkpoint
        in this process answers None without a round trip. Used once; a write of the
        thread, or :meth:`forget_latest`, drops the note."""
        self._latest_root[thread_id] = None

    def forget_latest(self, thread_id: str) -> None:
        """Drop what :meth:`note_empty` or ``aflush(read_latest=True)`` kept for the next
        read of ``thread_id`` and that nobody read."""
        self._latest_root.pop(thread_id, None)
        self._reading.discard(thread_id)

    async def aflush(self, thread_id: str, *, read_latest: bool = False) -> None:
        """Wait until every write queued for ``thread_id`` is stored, and forget the
        thread's outboxes.

        With ``read_latest``, for a caller that writes nothing more to the thread (a run
        that ended): the last batch, if one is still to be sent, also reads the thread's
        latest root checkpoint in the same script, and the next ``aget_tuple`` of it (the
        run's final ``aget_state``) answers from that without a round trip, once. A write
        of the thread after the read, or :meth:`forget_latest`, drops it.

        Raises:
            FencedOut, redis.ConnectionError, …: the first failure of a write of the
                thread since the last ``aflush`` (nothing after it was written).
        """
        if read_latest:
            boxes = [box for (t_id, _), box in self._outboxes.items() if t_id == thread_id]
            # One owner's writes only: with two outboxes, neither batch's read is the last.
            if len(boxes) == 1 and boxes[0].queued:
                boxes[0].read_latest = True
        await self._settle(thread_id)
        failed = None
        for key in [k for k in self._outboxes if k[0] == thread_id]:
            box = self._outboxes[key]
            if box.sender is None:
                del self._outboxes[key]
                failed = failed or box.failed
        if failed is not None:
            raise failed

    def _fenced_out(self, fence: tuple[bytes, bytes] | None, thread_id: str) -> FencedOut:
        key, expected = (f.decode(errors="replace") for f in fence or (b"", b""))
        return FencedOut(
            f"fence {key!r} no longer holds {expected!r}: another worker owns thread "
            f"{thread_id!r}; nothing was written",
            fence_key=key,
            expected=expected,
            thread_id=thread_id,
        )

    # --- reads ----------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Load one checkpoint (the latest of its namespace without ``checkpoint_id``)
        with its channel values and pending writes, in one script."""
        configurable = config["configurable"]
        thread_id: str = configurable["thread_id"]
        ns: str = configurable.get("checkpoint_ns", "")
        checkpoint_id: str | None = configurable.get("checkpoint_id")
        if not checkpoint_id and not ns and thread_id in self._latest_root:
            entry = self._latest_root.pop(thread_id)
            return None if entry is None else self._to_tuple(thread_id, entry)
        args = (b"ids", f"{ns}\0{checkpoint_id}".encode()) if checkpoint_id else (b"latest", ns.encode())
        await self._settle(thread_id)
        found = await self._eval(LOAD, self.thread_keys(thread_id), args)
        return self._to_tuple(thread_id, found[0]) if found else None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Yield checkpoints newest first (by checkpoint id), thread by thread (threads sorted by id).

        Args:
            config: Restricts to its ``thread_id`` (else every thread, found by SCAN),
                ``checkpoint_ns`` (else every namespace) and ``checkpoint_id`` when present.
            filter: Metadata keys that must equal these values (compared as JSON).
            before: Only checkpoints with an id lower than this config's ``checkpoint_id``.
            limit: At most this many checkpoints.
        """
        if limit is not None and limit <= 0:
            return
        configurable: dict[str, Any] = config["configurable"] if config else {}
        ns: str | None = configurable.get("checkpoint_ns")
        only_id: str | None = configurable.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        wanted = _json_roundtrip(filter) if filter else None
        thread_id: str | None = configurable.get("thread_id")
        await self._settle(thread_id)
        threads = [thread_id] if thread_id is not None else sorted([t async for t in self._threads()])
        remaining = limit
        for thread in threads:
            keys = self.thread_keys(thread)
            fields = await self._candidates(keys, ns, only_id, before_id, wanted, remaining)
            for start in range(0, len(fields), _BATCH):
                batch = fields[start : start + _BATCH]
                if wanted is not None:
                    records = cast(list[bytes | None], await self.client.hmget(keys.records, batch))
                    batch = [
                        f
                        for f, rec in zip(batch, records, strict=True)
                        if rec is not None and _matches(rec, wanted)
                    ]
                    if not batch:
                        continue
                for entry in await self._eval(LOAD, keys, (b"ids", *batch)):
                    yield self._to_tuple(thread, entry)
                    if remaining is not None:
                        remaining -= 1
                        if remaining <= 0:
                            return

    async def _candidates(
        self,
        keys: ThreadKeys,
        ns: str | None,
        only_id: str | None,
        before_id: str | None,
        wanted: Any,
        limit: int | None,
    ) -> list[bytes]:
        """Index members (``ns\\0id``) of one thread that pass the id filters, newest first."""
        if ns is not None:
            pre = ns.encode() + b"\0"
            if only_id is not None:
                if before_id is not None and only_id >= before_id:
                    return []
                return [pre + only_id.encode()]
            high = b"(" + pre + before_id.encode() if before_id else b"(" + ns.encode() + b"\1"
            if limit is not None and wanted is None:
                members = await self.client.zrevrangebylex(keys.ids, high, b"[" + pre, start=0, num=limit)
            else:
                members = await self.client.zrevrangebylex(keys.ids, high, b"[" + pre)
            return cast(list[bytes], members)
        every = cast(list[bytes], await self.client.zrange(keys.ids, 0, -1))
        parsed = [(m.partition(b"\0")[2], m) for m in every]
        only = only_id.encode() if only_id is not None else None
        before_b = before_id.encode() if before_id is not None else None
        parsed = [
            (cid, m)
            for cid, m in parsed
            if (only is None or cid == only) and (before_b is None or cid < before_b)
        ]
        parsed.sort(reverse=True)
        return [m for _, m in parsed]

    async def _threads(self) -> AsyncIterator[str]:
        """Every thread id with at least one checkpoint (SCAN; no global registry)."""
        head, tail = self._key_head.encode(), b"}:i"
        seen: set[bytes] = set()
        async for key in self.client.scan_iter(
            match=escape_glob(self._key_head) + "*}:i", count=1000, _type="zset"
        ):
            if key.startswith(head) and key.endswith(tail) and key not in seen:
                seen.add(key)
                yield key[len(head) : -len(tail)].decode()

    def _to_tuple(self, thread_id: str, entry: list[Any]) -> CheckpointTuple:
        field, record, refs, blobs, writes = entry
        ns_b, _, checkpoint_id_b = field.partition(b"\0")
        ns, checkpoint_id = ns_b.decode(), checkpoint_id_b.decode()
        parent, _run_id, md, type_, data = record.split(b"\0", 4)
        loads = self.serde.loads_typed
        checkpoint = loads((type_.decode(), data))
        values: dict[str, Any] = {}
        if refs:
            for ref, blob in zip(refs.split(b"\1"), blobs, strict=True):
                if blob:  # None: missing, b"": the channel had no value
                    blob_type, _, blob_data = blob.partition(b"\0")
                    values[ref.partition(b"\0")[0].decode()] = loads((blob_type.decode(), blob_data))
        checkpoint["channel_values"] = values
        pending: list[tuple[tuple[str, str, int], PendingWrite]] = []
        for raw in writes:
            if raw is None:
                continue
            task_id_b, idx, path, channel, w_type, w_data = raw.split(b"\0", 5)
            task_id = task_id_b.decode()
            pending.append(
                (
                    (path.decode(), task_id, int(idx)),
                    (task_id, channel.decode(), loads((w_type.decode(), w_data))),
                )
            )
        pending.sort(key=lambda p: p[0])
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint_id,
                }
            },
            checkpoint=checkpoint,
            metadata=orjson.loads(md),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "checkpoint_id": parent.decode(),
                    }
                }
                if parent
                else None
            ),
            pending_writes=[w for _, w in pending],
        )

    # --- maintenance ----------------------------------------------------------------------

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, blob and write of a thread (one ``DEL``)."""
        await self._settle(thread_id)
        await self.client.delete(*self.thread_keys(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata ``run_id`` is listed.

        Scans every thread; one script per thread, atomic per thread.
        """
        if not run_ids:
            return
        await self._settle()
        async for thread_id in self._threads():
            await self._eval(DROP, self.thread_keys(thread_id), (b"runs", *[r.encode() for r in run_ids]))

    async def arollback_run(self, thread_id: str, run_id: str, base: tuple[bytes, set[bytes]] | None) -> None:
        """Undo a run on one thread: delete the checkpoints it wrote, and the pending
        writes it added to ``base`` (the checkpoint it started from, with the writes that
        were there before it). Idempotent: a rollback cut short is simply done again."""
        keys = self.thread_keys(thread_id)
        await self._settle(thread_id)
        await self._eval(DROP, keys, (b"runs", run_id.encode()))
        if base is None:
            return
        checkpoint, kept = base
        members: Any = await self.client.zrangebylex(
            keys.write_ids, b"[" + checkpoint + b"\0", b"(" + checkpoint + b"\1"
        )
        added = [m for m in members if m not in kept]
        if added:
            pipe = self.client.pipeline(transaction=True)
            pipe.zrem(keys.write_ids, *added)
            pipe.hdel(keys.writes, *added)
            await pipe.execute()

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of one thread into another.

        Checkpoints already on the target are kept unless the source has the same id.
        """
        await self._settle(source_thread_id)
        src = self.thread_keys(source_thread_id)
        dst = self.thread_keys(target_thread_id)
        read = self.client.pipeline(transaction=True)
        read.zrange(src.ids, 0, -1)
        read.hgetall(src.records)
        read.hgetall(src.refs)
        read.hgetall(src.blobs)
        read.zrange(src.write_ids, 0, -1)
        read.hgetall(src.writes)
        index, records, refs, blobs, write_ids, writes = await read.execute()
        if not index:
            return
        write = self.client.pipeline(transaction=True)
        write.zadd(dst.ids, dict.fromkeys(index, 0))
        write.hset(dst.records, mapping=records)
        write.hset(dst.refs, mapping=refs)
        if blobs:
            write.hset(dst.blobs, mapping=blobs)
        if write_ids:
            write.zadd(dst.write_ids, dict.fromkeys(write_ids, 0))
            write.hset(dst.writes, mapping=writes)
        await write.execute()

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only the latest checkpoint per namespace (``"keep_latest"``), or delete
        the threads (``"delete"``).

        ``"keep_latest"`` drops ancestors: not for graphs that use ``DeltaChannel``.
        """
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use keep_latest or delete")
        for thread_id in thread_ids:
            await self._settle(thread_id)
            if strategy == "delete":
                await self.adelete_thread(thread_id)
            else:
                await self._eval(DROP, self.thread_keys(thread_id), (b"latest",))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """``<32-digit counter>.<random>``: increasing, and unique across forks of a thread,
        so a blob written for one branch is never overwritten by another."""
        if current is None:
            current_v = 0
        elif isinstance(current, int):
            current_v = current
        else:
            current_v = int(current.split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # --- the sync API is not offered -----------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Not supported: use :meth:`aget_tuple`."""
        raise _sync_unsupported("get_tuple")

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Not supported: use :meth:`alist`."""
        raise _sync_unsupported("list")

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Not supported: use :meth:`aput`."""
        raise _sync_unsupported("put")

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Not supported: use :meth:`aput_writes`."""
        raise _sync_unsupported("put_writes")

    def delete_thread(self, thread_id: str) -> None:
        """Not supported: use :meth:`adelete_thread`."""
        raise _sync_unsupported("delete_thread")

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Not supported: use :meth:`adelete_for_runs`."""
        raise _sync_unsupported("delete_for_runs")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Not supported: use :meth:`acopy_thread`."""
        raise _sync_unsupported("copy_thread")

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Not supported: use :meth:`aprune`."""
        raise _sync_unsupported("prune")


def _matches(record: bytes, wanted: dict[str, Any]) -> bool:
    """Whether a stored record's metadata has every key/value of ``wanted``."""
    md = orjson.loads(record.split(b"\0", 3)[2])
    return all(md.get(k) == v for k, v in wanted.items())
