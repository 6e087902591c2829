"""What tracing and metrics cost: the same workload with them off and on, same run.

The workload is ``bench/api.py``'s: the 10-node graph ``bench/graphs/ten_nodes.py`` through
the real service (``interlock serve``, embedded Redis, authentication on) and the stock
``langgraph-sdk`` client, one fresh thread per run. Three variants of the service, each
started fresh once per round (their order rotates from round to round, so background load
on the shared machine hits all alike):

- ``off``: ``OTEL_SDK_DISABLED=true``, ``INTERLOCK_METRICS=false``: no tracer or meter
  provider, nodes run unwrapped;
- ``metrics``: the default of ``interlock serve``: OpenTelemetry metrics kept for
  ``/metrics``, no spans;
- ``traces``: metrics, and spans exported by the batch processor over OTLP/HTTP to a local
  collector (``bench/otlp_sink.py``, a process of its own that decodes and counts every
  span it gets); FastAPI's own request spans come with it.

Per variant and round: warm-up runs, then ``--runs`` sequential runs (latency, and server
CPU per run from /proc over that phase), then ``--clients`` concurrent clients for
``--seconds`` (throughput, CPU per run, and the burst the span queue must absorb). Spans: the collector must have
received exactly 13 per run (root, 10 nodes, 2 request spans) and the server's log must
have no ``Queue full, dropping`` line from the batch processor. (The SDK's own counter of
dropped spans, ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``, is left off: it records two
metrics per span and showed up at ~4% of the server's CPU in a py-spy profile.)

    python -m bench.tracing [--rounds 3] [--runs 300] [--clients 10] [--seconds 15]
                            [--out bench/results/tracing.md]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.api import (
    BENCH_KEY,
    CONFIG,
    GRAPH_ID,
    NODES,
    ROOT,
    Result,
    Server,
    _clean_env,
    _revision,
    latency,
    scratch_dir,
    throughput,
    tree_cpu_s,
)
from core.processes import stop_process
from core.redis import free_port

WARMUP = 30
SPANS_PER_RUN = NODES + 3
"""The segment's root, one span per node, FastAPI's request span of each of the run's two
requests (``threads.create``, ``runs.wait``)."""
VARIANTS = {
    "off": "`OTEL_SDK_DISABLED=true`, `INTERLOCK_METRICS=false`: no tracer or meter provider, nodes unwrapped",
    "metrics": "default `interlock serve`: OpenTelemetry metrics for `/metrics` (Prometheus reader), no spans",
    "traces": "metrics, and spans: `BatchSpanProcessor` (queue 65,536, batch 512) → OTLP/HTTP → local "
    "collector `bench/otlp_sink.py`; FastAPI's request spans included",
}


@dataclass
class Sample:
    """One variant over all rounds."""

    name: str
    result: Result
    seq_cpu_s: float = 0.0
    seq_runs: int = 0
    runs_made: int = 0
    roots_received: int = 0
    spans_received: int = 0
    dropped: int = 0
    round_p50: list[float] = field(default_factory=list)

    @property
    def seq_cpu_ms(self) -> float:
        return self.seq_cpu_s * 1000 / self.seq_runs

    @property
    def p50(self) -> float:
        return statistics.median(self.result.wait_ms)


def _sink(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.otlp_sink", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/count", timeout=0.5).status_code == 200:
                return process
        time.sleep(0.1)
    raise RuntimeError(f"the OTLP sink did not start:\n{log.read_text()[-2000:]}")


def _server(scratch: Path, variant: str, sink_port: int) -> Server:
    data = Path(tempfile.mkdtemp(prefix=f"interlock-{variant}-", dir=scratch))
    port = free_port()
    extra = {
        "off": {"OTEL_SDK_DISABLED": "true", "INTERLOCK_METRICS": "false"},
        "metrics": {},
        "traces": {
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces",
            "OTEL_METRICS_EXPORTER": "none",
        },
    }[variant]
    env = _clean_env(
        INTERLOCK_CONFIG=str(CONFIG),
        INTERLOCK_DATA_DIR=str(data),
        INTERLOCK_REDIS_APPENDFSYNC="everysec",
        INTERLOCK_LOCAL_LLM="false",
        INTERLOCK_API_KEYS=json.dumps([{"key": BENCH_KEY, "tenant": "bench", "roles": ["operator"]}]),
        **extra,
    )
    return Server(
        variant,
        [sys.executable, "-m", "api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env,
        ROOT,
        port,
        data.with_suffix(".log"),
        VARIANTS[variant],
        warmup=WARMUP,
    )


def _dropped(log: Path) -> int:
    """Spans the SDK's batch processor dropped: it logs ``Queue full, dropping Span.`` (once
    per burst: its logger filters repeats, so any line at all means drops)."""
    return log.read_text(errors="replace").count("Queue full, dropping")


def measure(sample: Sample, server: Server, runs: int, clients: int, seconds: float, sink_port: int) -> None:
    result = sample.result
    print(f"{server.name}: starting", flush=True)
    server.start()
    try:
        time.sleep(2)
        result.load.append(os.getloadavg()[0])
        before = len(result.wait_ms)
        asyncio.run(latency(server.url, GRAPH_ID, result, 1, WARMUP))  # warm-up + 1
        result.wait_ms.pop()
        result.create_ms.pop()
        cpu0 = sum(tree_cpu_s(server.pid).values())
        asyncio.run(latency(server.url, GRAPH_ID, result, runs, 0))
        sample.seq_cpu_s += sum(tree_cpu_s(server.pid).values()) - cpu0
        sample.seq_runs += runs
        sample.round_p50.append(statistics.median(result.wait_ms[before:]))
        result.load.append(os.getloadavg()[0])
        tp_before = result.tp_runs
        asyncio.run(throughput(server.url, GRAPH_ID, server.pid, result, clients, seconds))
        result.load.append(os.getloadavg()[0])
        sample.runs_made += WARMUP + 1 + runs + clients + result.tp_runs - tp_before
        print(f"{server.name}: p50 {sample.round_p50[-1]:.2f} ms", flush=True)
    finally:
        server.stop()  # flushes the span queue
    if server.name == "traces":
        sample.dropped += _dropped(server.log_path)


def render(samples: dict[str, Sample], *, load_start: float, args: argparse.Namespace) -> str:
    off, met, tr = samples["off"], samples["metrics"], samples["traces"]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = {"interlock": _revision()} | {
        n: importlib.metadata.version(n)
        for n in ("langgraph", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")
    }
    lines = [
        "# Tracing benchmark: the same workload with tracing and metrics off and on",
        "",
        f"- Date: {now}",
        f"- Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"load average (1 min) {load_start:.2f} before the first server started (shared with other "
        "work: per variant, the lowest–highest read before latency, before throughput and after)",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Workload: `bench/graphs/ten_nodes.py` ({NODES} linear nodes, ~1 KB state) through "
        "`interlock serve` (1 worker, embedded Redis, `appendfsync everysec` to keep fsync jitter "
        "out of a comparison of CPU costs, authentication on); `langgraph-sdk` client, per run "
        "`threads.create()` + `runs.wait()`",
        f"- Rounds: {args.rounds}, variants in rotating order, each on a fresh server; per round "
        f"{WARMUP} warm-up runs, {args.runs} sequential runs (latency; server CPU per run over "
        f"them), then {args.clients} clients for {args.seconds:.0f} s (throughput, CPU per run, "
        "the burst the span queue has to absorb)",
        "- Server CPU: utime + stime of the server's process tree (python + redis-server) from "
        "/proc; the collector's CPU is not in it (a collector runs elsewhere)",
        "",
    ]
    lines += [f"- **{s.name}**: {VARIANTS[s.name]}" for s in samples.values()]
    lines += [
        "",
        "## Results",
        "",
        "| variant | `runs.wait` p50 ms | per node ms | p99 ms | CPU ms/run (sequential) | runs/s "
        f"({args.clients} clients) | CPU ms/run (clients) | load avg (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in samples.values():
        r = s.result
        spread = f" ({min(s.round_p50):.2f}–{max(s.round_p50):.2f})" if len(s.round_p50) > 1 else ""
        lines.append(
            f"| {s.name} | {s.p50:.2f}{spread} | {s.p50 / NODES:.3f} | {r.p99:.2f} | {s.seq_cpu_ms:.2f} | "
            f"{r.runs_per_s:.1f} | {r.cpu_ms_per_run:.2f} | {min(r.load):.2f}–{max(r.load):.2f} |"
        )

    def pct(new: float, base: float) -> str:
        return f"{(new - base) / base * 100:+.1f}%"

    node_off = off.p50 / NODES
    lines += [
        "",
        "## Overhead",
        "",
        "| comparison | Δ p50 per node | Δ p50 | Δ CPU/run (sequential) | Δ CPU/run (clients) | Δ runs/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, new, base in (
        ("metrics vs off (the default's cost)", met, off),
        ("traces vs metrics (what spans add)", tr, met),
        ("traces vs off (everything)", tr, off),
    ):
        lines.append(
            f"| {label} | {(new.p50 - base.p50) / NODES * 1000:+.0f} µs | {pct(new.p50, base.p50)} | "
            f"{pct(new.seq_cpu_ms, base.seq_cpu_ms)} | "
            f"{pct(new.result.cpu_ms_per_run, base.result.cpu_ms_per_run)} | "
            f"{pct(new.result.runs_per_s, base.result.runs_per_s)} |"
        )
    overhead = (tr.p50 - off.p50) / off.p50 * 100
    cpu_overhead = (tr.seq_cpu_ms - off.seq_cpu_ms) / off.seq_cpu_ms * 100
    lines += [
        "",
        "## Against the targets",
        "",
        "| target | measured | met |",
        "| --- | ---: | :---: |",
        f"| tracing on (with metrics) adds < 5% per node, latency p50 (per node {node_off:.3f} ms off) "
        f"| {overhead:+.1f}% | {'yes' if overhead < 5 else '**no**'} |",
        f"| (same, server CPU per run, sequential) | {cpu_overhead:+.1f}% | {'yes' if cpu_overhead < 5 else '**no**'} |",
        f"| no span dropped: runs made = root spans received | {tr.runs_made} = {tr.roots_received} "
        f"| {'yes' if tr.runs_made == tr.roots_received else '**no**'} |",
        f"| no span dropped: spans received = {SPANS_PER_RUN} per run | {tr.spans_received} = "
        f"{SPANS_PER_RUN * tr.runs_made} | {'yes' if tr.spans_received == SPANS_PER_RUN * tr.runs_made else '**no**'} |",
        f"| no span dropped: the batch processor's `Queue full, dropping` log lines | {tr.dropped} "
        f"| {'yes' if tr.dropped == 0 else '**no**'} |",
        "",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def sink_process(scratch: Path) -> Iterator[int]:
    port = free_port()
    process = _sink(port, scratch / "sink.log")
    try:
        yield port
    finally:
        stop_process(process, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=300, help="sequential runs per variant and round")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15.0, help="throughput phase per variant and round")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tracing.md"))
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    order = list(VARIANTS)
    samples = {v: Sample(v, Result(v, VARIANTS[v], WARMUP)) for v in order}
    with scratch_dir() as scratch, sink_process(scratch) as sink_port:
        for i in range(args.rounds):
            print(f"round {i + 1}/{args.rounds}", flush=True)
            for variant in order[i % len(order) :] + order[: i % len(order)]:
                server = _server(scratch, variant, sink_port)
                measure(samples[variant], server, args.runs, args.clients, args.seconds, sink_port)
        counts = httpx.get(f"http://127.0.0.1:{sink_port}/count", timeout=10).json()
    samples["traces"].roots_received = counts["roots"]
    samples["traces"].spans_received = counts["spans"]
    report = render(samples, load_start=load_start, args=args)
    print(report)
    previous = args.out.read_text() if args.out.exists() else ""
    if "## Findings" in previous:
        report += "\n" + previous[previous.index("## Findings") :]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
