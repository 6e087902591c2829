"""What tracing and metrics cost: the same workload with them off and on, same run.

The workload is the 10-node graph ``bench/graphs/ten_nodes.py`` (plain-function nodes of
~1 ms each all told: the worst case for a per-node overhead). Three variants:

- ``off``: ``OTEL_SDK_DISABLED=true``, ``INTERLOCK_METRICS=false``: no tracer or meter
  provider, nodes run unwrapped;
- ``metrics``: the default of ``interlock serve``: OpenTelemetry metrics kept for
  ``/metrics``, no spans;
- ``traces``: metrics, and spans exported by the batch processor over OTLP/HTTP to a local
  collector (``bench/otlp_sink.py``, a process of its own that decodes and counts every
  span it gets).

Two parts, each interleaving the variants round by round (the machine is shared, so load
comes and goes; rotating the order spreads it over all variants):

1. **Per node, the worker in-process** (the target): a fresh process per variant and round
   (``--child``) builds the engine as ``interlock serve`` does and runs the graph through
   the run store one run at a time: everything but HTTP. CPU of the process (all threads,
   the exporter's included) and its redis-server, per run; the collector must receive
   every span that ended.
2. **End to end through the API**: ``interlock serve`` and the stock ``langgraph-sdk``
   client, sequential runs (latency, server CPU), then ``--clients`` concurrent clients
   (throughput, and the burst the span queue must absorb); FastAPI's request spans come
   with tracing.

No span may be dropped: the collector must count one root and 10 node spans per run, and
no ``Queue full, dropping`` line may appear in the logs (the SDK's own drop counter,
``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``, is left off: it records two metrics per span
and showed up at ~4% of the server's CPU in a py-spy profile).

    python -m bench.tracing [--worker-rounds 5] [--worker-runs 300] [--rounds 2] [--runs 300]
                            [--clients 10] [--seconds 15] [--out bench/results/tracing.md]
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

from bench.api import (
    BENCH_KEY,
    CONFIG,
    GRAPH_ID,
    NODES,
    ROOT,
    Result,
    Server,
    _clean_env,
    _input,
    _revision,
    latency,
    scratch_dir,
    throughput,
    tree_cpu_s,
)
from core.metrics import configure_metrics, shutdown_metrics
from core.processes import freeze_startup_heap, stop_process
from core.redis import EmbeddedRedis, free_port
from core.settings import Settings
from core.tracing import SERVICE_NAME, configure_tracing, shutdown_tracing
from runs.engine import open_engine
from runs.payload import RunPayload

WARMUP = 30
VARIANTS = {
    "off": "`OTEL_SDK_DISABLED=true`, `INTERLOCK_METRICS=false`: no tracer or meter provider, nodes unwrapped",
    "metrics": "default `interlock serve`: OpenTelemetry metrics for `/metrics` (Prometheus reader), no spans",
    "traces": "metrics, and spans: `BatchSpanProcessor` (queue 65,536, batch 2,048) → OTLP/HTTP → local "
    "collector `bench/otlp_sink.py`; FastAPI's request spans included",
}
COMPARISONS = (
    ("metrics vs off (the default's cost)", "metrics", "off"),
    ("traces vs metrics (what spans add)", "traces", "metrics"),
    ("traces vs off (everything)", "traces", "off"),
)
"""Each comparison the tables make: (label, variant, the variant it is compared with)."""


def _traces_env(sink_port: int) -> dict[str, str]:
    """What the ``traces`` variant adds to the environment: spans to the collector, and
    no OTLP metrics (the other variants export none either)."""
    return {
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"http://127.0.0.1:{sink_port}/v1/traces",
        "OTEL_METRICS_EXPORTER": "none",
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
    nodes_received: int = 0
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
        "traces": _traces_env(sink_port),
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


# --- per node: the worker in-process ------------------------------------------------------


class _Ended(SpanProcessor):
    """Counts spans that ended (to compare with what the collector received)."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


def _callgrind(on: bool) -> None:
    """Switch valgrind's instruction counting for this process on or off."""
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], check=True, capture_output=True
    )


async def _child_runs(variant: str, runs: int, data: Path, *, count: bool = False) -> dict[str, float]:
    ended = _Ended()
    if variant != "off":
        configure_metrics(SERVICE_NAME, prometheus=True)
    if variant == "traces":
        # Counted, the worker runs with the service's processors only: the counting
        # processor (for the drop check of the timed rounds) costs ~2.7 k instructions a
        # node, 2% of what spans add, and the service has none.
        configure_tracing(extra_processors=None if count else [ended])
    redis = EmbeddedRedis(data / "redis", appendfsync="everysec", port=free_port())
    url = redis.start()
    try:
        settings = Settings(
            redis_url=url,
            data_dir=data,
            config=CONFIG,
            local_llm=False,
            nearest_examples=False,
            llm_base_url="http://127.0.0.1:9/v1",
        )
        async with open_engine(settings, workers=1) as engine:
            freeze_startup_heap()  # as `interlock serve` does once it is ready

            async def one() -> float:
                thread_id, run_id = str(uuid.uuid4()), str(uuid.uuid4())
                payload = RunPayload(graph_id=GRAPH_ID, assistant_id="bench", input=_input())
                started = time.perf_counter()
                await engine.store.create_run(
                    run_id=run_id, thread_id=thread_id, graph_id=GRAPH_ID, assistant_id="bench",
                    metadata={}, payload=payload.model_dump(mode="json"), strategy="enqueue",
                    if_not_exists="create", is_resume=False,
                )  # fmt: skip
                end = await engine.store.wait_for_end(thread_id, run_id)
                if not end or end.get("status") != "success" or end["values"]["n"] != NODES:
                    raise RuntimeError(f"unexpected run end: {str(end)[:300]}")
                return (time.perf_counter() - started) * 1000

            for _ in range(WARMUP):
                await one()
            provider = trace.get_tracer_provider()
            if isinstance(provider, TracerProvider):
                provider.force_flush()  # the first export (its imports, its connection) is warm-up too
            if count:
                _callgrind(True)
            cpu0, own0 = tree_cpu_s(os.getpid()), time.process_time()
            latencies = [await one() for _ in range(runs)]
            if count:
                if isinstance(provider, TracerProvider):
                    provider.force_flush()  # the spans of these runs, encoded and sent: counted
                _callgrind(False)
            cpu1, own1 = tree_cpu_s(os.getpid()), time.process_time()
    finally:
        redis.stop()
    shutdown_tracing()  # flushes the span queue before the counts are read
    shutdown_metrics()
    total = sum(cpu1.values()) - sum(cpu0.values())
    return {
        "p50_ms": statistics.median(latencies),
        "cpu_ms": total * 1000 / runs,
        "python_cpu_ms": (own1 - own0) * 1000 / runs,
        "ended": ended.ended,
        "runs": WARMUP + runs,
    }


def child_main(variant: str, runs: int, *, count: bool = False) -> None:
    with scratch_dir() as data:
        print(json.dumps(asyncio.run(_child_runs(variant, runs, data, count=count))), flush=True)


def measure_instructions(runs: int, sink_port: int, scratch: Path) -> dict[str, float]:
    """Instructions per run of each variant, counted by valgrind (callgrind) in the
    worker process over ``runs`` runs after the warm-up: the same count for the same
    work whatever else the machine does. The three variants run at once (valgrind runs a
    process on one core, ~50x slower); the batch processor's schedule delay is raised so
    that its batches fill up as they do at full speed."""
    procs = {}
    for variant in VARIANTS:
        # The checkpoint batching window (group commit) scaled to valgrind's ~50x slower
        # speed, so that a run's writes gather in as many batches as at full speed.
        env = _clean_env(INTERLOCK_CHECKPOINT_BATCH_MS="1000")
        if variant == "traces":
            env |= _traces_env(sink_port) | {"OTEL_BSP_SCHEDULE_DELAY": "600000"}
        argv = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={scratch / f'callgrind-{variant}.out'}",
            sys.executable, "-m", "bench.tracing", "--child", variant, "--runs", str(runs), "--count",
        ]  # fmt: skip
        procs[variant] = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    counts = {}
    for variant, proc in procs.items():
        _, err = proc.communicate()
        (scratch / f"callgrind-{variant}.log").write_text(err)
        found = [line for line in err.splitlines() if "Collected :" in line]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"{variant} under callgrind failed:\n{err[-3000:]}")
        counts[variant] = int(found[-1].rsplit(":", 1)[1]) / runs
        print(f"instructions {variant}: {counts[variant] / 1e6:.2f} M/run", flush=True)
    return counts


def render_instructions(counts: dict[str, float], runs: int) -> list[str]:
    lines = [
        "## Per node, in instructions (valgrind callgrind)",
        "",
        f"The worker in-process as above, {runs} runs per variant after the warm-up, with the "
        "instructions of the process counted by callgrind (all its threads: the span exporter's "
        "encoding and HTTP posts included; the batch processor's schedule delay raised so its "
        "batches fill up as at full speed; the service's span processors only, without the "
        "timed rounds' counting one). redis-server is not counted: tracing "
        "sends it nothing, so leaving it out only makes the percentages larger. Unlike CPU "
        "seconds on this shared machine, the count is the same for the same work.",
        "",
        "| variant | instructions per run | per node |",
        "| --- | ---: | ---: |",
    ]
    for name, value in counts.items():
        lines.append(f"| {name} | {value / 1e6:.2f} M | {value / NODES / 1e3:.0f} k |")
    lines += ["", "| comparison | Δ per node | Δ |", "| --- | ---: | ---: |"]
    for label, new_name, base_name in COMPARISONS:
        new, base = counts[new_name], counts[base_name]
        lines.append(f"| {label} | {(new - base) / NODES / 1e3:+.0f} k | {(new - base) / base * 100:+.1f}% |")
    lines.append("")
    return lines


@dataclass
class WorkerSample:
    name: str
    p50_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    python_cpu_ms: list[float] = field(default_factory=list)
    runs: int = 0
    ended: int = 0
    received: int = 0
    roots: int = 0
    nodes: int = 0
    dropped_log: int = 0
    load: list[float] = field(default_factory=list)


def measure_worker(sample: WorkerSample, runs: int, sink_port: int, scratch: Path) -> None:
    """One round of one variant: a fresh process executes ``runs`` runs in-process."""
    env = _clean_env()
    if sample.name == "traces":
        env |= _traces_env(sink_port)
    before = httpx.get(f"http://127.0.0.1:{sink_port}/count", timeout=10).json()
    sample.load.append(os.getloadavg()[0])
    out = subprocess.run(
        [sys.executable, "-m", "bench.tracing", "--child", sample.name, "--runs", str(runs)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    (scratch / f"worker-{sample.name}.log").open("a").write(out.stderr)
    if out.returncode != 0:
        raise RuntimeError(f"{sample.name} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    after = httpx.get(f"http://127.0.0.1:{sink_port}/count", timeout=10).json()
    sample.p50_ms.append(result["p50_ms"])
    sample.cpu_ms.append(result["cpu_ms"])
    sample.python_cpu_ms.append(result["python_cpu_ms"])
    sample.runs += result["runs"]
    sample.ended += result["ended"]
    sample.received += after["spans"] - before["spans"]
    sample.roots += after["roots"] - before["roots"]
    sample.nodes += after["nodes"] - before["nodes"]
    sample.dropped_log += out.stderr.count("Queue full, dropping")
    print(
        f"worker {sample.name}: p50 {result['p50_ms']:.2f} ms, CPU {result['cpu_ms']:.2f} ms/run",
        flush=True,
    )


def render_worker(samples: dict[str, WorkerSample], runs: int) -> list[str]:
    med = statistics.median
    rounds = len(samples["off"].cpu_ms)
    lines = [
        "## Per node: the worker, in-process (the target)",
        "",
        f"A fresh process per variant and round ({rounds} rounds, order rotating) builds the engine "
        "as `interlock serve` does (`open_engine`, the real `configure_metrics`/`configure_tracing`, "
        f"its own embedded Redis with `appendfsync everysec`), then runs {WARMUP} warm-up and "
        f"{runs} measured runs of the 10-node graph one at a time through the run store (record + "
        "enqueue, a worker executes, wait for the end event): everything but HTTP. CPU is the "
        "process's (all threads: the span exporter's included) plus its redis-server's, per run. "
        "Values: median of the rounds (lowest–highest).",
        "",
        "| variant | p50 ms/run | per node ms | CPU ms/run | of which Python | load avg (1 min) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]

    def spread(values: list[float]) -> str:
        return f"{med(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    for s in samples.values():
        lines.append(
            f"| {s.name} | {spread(s.p50_ms)} | {med(s.p50_ms) / NODES:.3f} | {spread(s.cpu_ms)} | "
            f"{med(s.python_cpu_ms):.2f} | {min(s.load):.2f}–{max(s.load):.2f} |"
        )
    lines += [
        "",
        "| comparison | Δ CPU per node | Δ CPU | Δ p50 per node | Δ p50 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, new_name, base_name in COMPARISONS:
        new, base = samples[new_name], samples[base_name]
        d_cpu = med(new.cpu_ms) - med(base.cpu_ms)
        d_p50 = med(new.p50_ms) - med(base.p50_ms)
        lines.append(
            f"| {label} | {d_cpu / NODES * 1000:+.0f} µs | {d_cpu / med(base.cpu_ms) * 100:+.1f}% | "
            f"{d_p50 / NODES * 1000:+.0f} µs | {d_p50 / med(base.p50_ms) * 100:+.1f}% |"
        )
    lines.append("")
    return lines


def render(
    http: dict[str, Sample],
    worker: dict[str, WorkerSample],
    counts: dict[str, float],
    *,
    load_start: float,
    args: argparse.Namespace,
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = {"interlock": _revision()} | {
        n: importlib.metadata.version(n)
        for n in ("langgraph", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http", "fastapi")
    }
    lines = [
        "# Tracing benchmark: the same workload with tracing and metrics off and on",
        "",
        f"- Date: {now}",
        f"- Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}; "
        f"load average (1 min) {load_start:.2f} at the start. The machine is shared with other "
        "work (tests of other branches): the load averages read during each phase are in the "
        "tables, and single rounds vary by tens of percent, so variants are interleaved and the "
        "per-node target is judged on medians of rounds",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Workload: `bench/graphs/ten_nodes.py` ({NODES} linear nodes, ~1 KB state, each node a "
        "plain function: ~1 ms per node all told, the cheapest a node gets, so the worst case for "
        "a per-node overhead)",
        "- Collector: `bench/otlp_sink.py`, its own process on loopback, decodes every OTLP/HTTP "
        "export and counts spans",
        "",
    ]
    lines += [f"- **{name}**: {note}" for name, note in VARIANTS.items()]
    lines += ["", *render_worker(worker, args.worker_runs)]
    if counts:
        lines += render_instructions(counts, args.instruction_runs)
    if http:
        lines += render_http(http, args)
    wt = worker["traces"]
    med = statistics.median
    cpu = (med(wt.cpu_ms) - med(worker["off"].cpu_ms)) / med(worker["off"].cpu_ms) * 100
    p50 = (med(wt.p50_ms) - med(worker["off"].p50_ms)) / med(worker["off"].p50_ms) * 100
    lines += ["## Against the targets", "", "| target | measured | met |", "| --- | ---: | :---: |"]
    if counts:
        spans = (counts["traces"] - counts["metrics"]) / counts["metrics"] * 100
        everything = (counts["traces"] - counts["off"]) / counts["off"] * 100
        lines += [
            f"| tracing on adds < 5% per node: worker instructions, traces vs metrics (the "
            f"default service, spans off) | {spans:+.1f}% | {_met(spans < 5)} |",
            f"| (all telemetry: worker instructions, traces vs off) | {everything:+.1f}% | {_met(everything < 5)} |",
        ]
    lines += [
        f"| (worker CPU seconds, traces vs off: noisy here) | {cpu:+.1f}% | {_met(cpu < 5)} |",
        f"| (run latency p50, traces vs off) | {p50:+.1f}% | {_met(p50 < 5)} |",
    ]
    phases = [("worker", wt.runs, wt.roots, wt.nodes, wt.dropped_log)]
    if http:
        t = http["traces"]
        phases.append(("end to end", t.runs_made, t.roots_received, t.nodes_received, t.dropped))
    for phase, runs, roots, nodes, dropped in phases:
        ok = roots == runs and nodes == NODES * runs and dropped == 0
        lines.append(
            f"| no span dropped ({phase}): root spans = runs, node spans = {NODES} × runs, no "
            f"`Queue full` log line | {roots} = {runs}, {nodes} = {NODES * runs}, {dropped} | {_met(ok)} |"
        )
    lines.append(
        f"| (worker) spans ended = spans the collector received | {wt.ended} = {wt.received} "
        f"| {_met(wt.ended == wt.received)} |"
    )
    lines.append("")
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def render_http(samples: dict[str, Sample], args: argparse.Namespace) -> list[str]:
    lines = [
        "## End to end: through the API",
        "",
        f"`interlock serve` (1 worker, embedded Redis with `appendfsync everysec`, authentication "
        f"on) and the `langgraph-sdk` client, per run `threads.create()` + `runs.wait()`. "
        f"{args.rounds} rounds, variants in rotating order, each on a fresh server; per round "
        f"{WARMUP} warm-up runs, {args.runs} sequential runs (latency; server CPU per run over "
        f"them), then {args.clients} clients for {args.seconds:.0f} s (throughput, CPU per run, "
        "and the burst the span queue has to absorb). Server CPU: the server's process tree "
        "(python + redis-server) from /proc. With traces on, FastAPI adds a span per request.",
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

    lines += [
        "",
        "| comparison | Δ p50 per node | Δ p50 | Δ CPU/run (sequential) | Δ CPU/run (clients) | Δ runs/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, new_name, base_name in COMPARISONS:
        new, base = samples[new_name], samples[base_name]
        lines.append(
            f"| {label} | {(new.p50 - base.p50) / NODES * 1000:+.0f} µs | {pct(new.p50, base.p50)} | "
            f"{pct(new.seq_cpu_ms, base.seq_cpu_ms)} | "
            f"{pct(new.result.cpu_ms_per_run, base.result.cpu_ms_per_run)} | "
            f"{pct(new.result.runs_per_s, base.result.runs_per_s)} |"
        )
    lines.append("")
    return lines


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
    parser.add_argument("--worker-rounds", type=int, default=5, help="in-process rounds per variant")
    parser.add_argument("--worker-runs", type=int, default=300, help="in-process runs per variant and round")
    parser.add_argument("--rounds", type=int, default=2, help="end-to-end rounds per variant (0: none)")
    parser.add_argument(
        "--runs", type=int, default=300, help="end-to-end sequential runs per variant and round"
    )
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15.0, help="throughput phase per variant and round")
    parser.add_argument("--out", type=Path, default=Path("bench/results/tracing.md"))
    parser.add_argument(
        "--instruction-runs", type=int, default=200, help="runs per variant under callgrind (0: none)"
    )
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--count", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.worker_runs if args.runs is None else args.runs, count=args.count)
        return
    if args.worker_rounds < 1:
        parser.error("--worker-rounds must be at least 1: the CPU table and the drop check come from it")
    if args.instruction_runs and not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        parser.error(
            "the instruction count needs valgrind (apt-get install valgrind), or --instruction-runs 0"
        )
    load_start = os.getloadavg()[0]
    order = list(VARIANTS)
    worker = {v: WorkerSample(v) for v in order}
    http = {v: Sample(v, Result(v, VARIANTS[v], WARMUP)) for v in order} if args.rounds else {}
    with scratch_dir() as scratch, sink_process(scratch) as sink_port:
        counts = (
            measure_instructions(args.instruction_runs, sink_port, scratch) if args.instruction_runs else {}
        )
        for i in range(args.worker_rounds):
            print(f"worker round {i + 1}/{args.worker_rounds}", flush=True)
            for variant in order[i % len(order) :] + order[: i % len(order)]:
                measure_worker(worker[variant], args.worker_runs, sink_port, scratch)
        before = httpx.get(f"http://127.0.0.1:{sink_port}/count", timeout=10).json()
        for i in range(args.rounds):
            print(f"end-to-end round {i + 1}/{args.rounds}", flush=True)
            for variant in order[i % len(order) :] + order[: i % len(order)]:
                server = _server(scratch, variant, sink_port)
                measure(http[variant], server, args.runs, args.clients, args.seconds, sink_port)
        after = httpx.get(f"http://127.0.0.1:{sink_port}/count", timeout=10).json()
    if http:
        http["traces"].roots_received = after["roots"] - before["roots"]
        http["traces"].nodes_received = after["nodes"] - before["nodes"]
    report = render(http, worker, counts, load_start=load_start, args=args)
    print(report)
    previous = args.out.read_text() if args.out.exists() else ""
    if "## Findings" in previous:
        report += "\n" + previous[previous.index("## Findings") :]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)


if __name__ == "__main__":
    main()
