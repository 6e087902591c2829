"""The embedded Redis and the server check, against real redis-server processes."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aredis

from core.errors import ConfigurationError
from core.redis import EmbeddedRedis, Lua, Scripts, check_server, make_client, parse_version, scratch_dir


async def test_embedded_redis_persists_across_restart_on_unix_socket() -> None:
    data = scratch_dir()
    with EmbeddedRedis(data) as server:
        assert server.url.startswith("unix://")
        client = make_client(server.url)
        await client.set("k", "v")
        info = await client.config_get("appendfsync")
        assert info["appendfsync"] == "always"
        await client.aclose()
    # SIGKILL-free restart on the same directory: the AOF brings the key back.
    with EmbeddedRedis(data) as server:
        client = make_client(server.url)
        assert await client.get("k") == b"v"
        await client.aclose()


async def test_embedded_redis_keeps_acknowledged_writes_after_kill() -> None:
    server = EmbeddedRedis(scratch_dir())
    server.start()
    client = make_client(server.url)
    await client.set("acked", "1")
    await client.aclose()
    server.kill()
    server.start()
    client = make_client(server.url)
    assert await client.get("acked") == b"1"
    await client.aclose()
    server.stop()


async def test_check_server_reports_version(redis_client: aredis.Redis) -> None:
    version = await check_server(redis_client)
    assert parse_version(version) >= (6, 2)


async def test_check_server_explains_unreachable_redis() -> None:
    client = make_client("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="cannot reach Redis"):
        await check_server(client)
    await client.aclose()


def test_parse_version() -> None:
    assert parse_version("6.2.14") == (6, 2, 14)
    assert parse_version("7.0.15") < (7, 2)


async def test_scripts_survive_a_redis_restart_without_a_retry() -> None:
    """``Scripts.run`` never retries (a script that must not run twice), so a connection
    it kept from before a Redis restart must not be used: like redis-py's pool, it sees
    the server closed it and takes a fresh one. Kept connections are several, all dead."""
    server = EmbeddedRedis(scratch_dir())
    server.start()
    client = make_client(server.url)
    scripts = Scripts(client)
    incr = Lua("return redis.call('INCR', KEYS[1])")
    try:
        # Four calls at once: four connections kept.
        assert sorted(await asyncio.gather(*(scripts.run(incr, [b"n"], []) for _ in range(4)))) == [
            1,
            2,
            3,
            4,
        ]
        server.kill()
        server.start()
        await asyncio.sleep(0.1)  # the loop sees the old connections closed
        for expected in (5, 6, 7, 8, 9):
            assert await scripts.run(incr, [b"n"], []) == expected
    finally:
        await client.aclose()
        server.stop()
