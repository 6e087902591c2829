"""Where Interlock's server CPU goes: py-spy samples of the API process, sorted into buckets.

``py-spy record --gil`` samples only the thread holding the GIL, so the samples are Python
CPU time (the uvloop and httptools C code runs with the GIL held and shows up as the
frame that called it: ``Runner.run`` for the event loop). Each sample goes to the bucket
of the first frame, walking from the leaf towards the root, whose file matches one of
:data:`BUCKETS`: a pydantic call made by FastAPI counts as pydantic, a socket write made by
the checkpointer as Redis I/O. Frames of the standard library's asyncio, contextlib,
functools… match nothing and are walked past. redis-server's CPU comes from /proc, since
py-spy sees Python only.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

BUCKETS: list[tuple[str, tuple[str, ...]]] = [
    ("JSON (orjson via core/jsonutil, json)", ("core/jsonutil.py", "json/", "orjson/")),
    (
        "pydantic validation and serialisation",
        ("pydantic/", "pydantic_core/", "fastapi/_compat", "fastapi/encoders"),
    ),
    ("Redis client I/O (redis-py: commands, RESP parsing, socket writes)", ("redis/",)),
    (
        "checkpointer (store/checkpoint.py, LangGraph serde)",
        ("store/checkpoint.py", "langgraph/checkpoint/"),
    ),
    ("run store: records, queue, events (store/runs.py)", ("store/runs.py",)),
    ("OpenTelemetry spans", ("opentelemetry/",)),
    (
        "thread-pool hand-offs (sync nodes, sync FastAPI dependency)",
        ("concurrent/futures/", "threading.py", "queue.py", "anyio/", "starlette/concurrency.py"),
    ),
    ("the graph's node function", ("bench/graphs/",)),
    (
        "LangGraph loop (pregel, channels, langchain_core runnables/callbacks)",
        ("langgraph/", "langchain_core/"),
    ),
    (
        "HTTP: uvicorn, starlette, FastAPI routing and middleware",
        ("uvicorn/", "starlette/", "fastapi/", "httptools/", "api/app.py"),
    ),
    ("Interlock glue (api/routes, runs/worker, runs/compile)", ("api/", "runs/", "core/", "graphs/")),
]
EVENT_LOOP = "event loop (uvloop C code, callbacks) and the rest"
_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>.*):(?P<line>\d+)\)$")
_STDLIB = str(Path(shutil.__file__).parent) + "/"


def py_spy() -> Path | None:
    """The ``py-spy`` next to this interpreter (``pip install py-spy``), or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return local
    found = shutil.which("py-spy")
    return Path(found) if found else None


def record(exe: Path, pid: int, seconds: int, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` and its child processes (worker processes) for ``seconds``;
    collapsed stacks go to ``out``."""
    argv = [
        str(exe),
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--gil",
        "--nonblocking",
        "--full-filenames",
    ]
    argv += ["--format", "raw", "--rate", str(rate), "--duration", str(seconds), "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _relative(path: str) -> str:
    """``…/site-packages/redis/x.py`` → ``redis/x.py``; repository and stdlib files likewise."""
    if "/site-packages/" in path:
        return path.rsplit("/site-packages/", 1)[1]
    if path.startswith(str(ROOT) + "/"):
        return path[len(str(ROOT)) + 1 :]
    if path.startswith(_STDLIB):
        return path[len(_STDLIB) :]
    return path


def bucket_of(frames: list[str]) -> str:
    paths = [_relative(m["path"]) if (m := _FRAME.match(f)) else "" for f in frames]
    # Everything on the main thread runs under uvicorn's Server.run → Runner.run; only
    # frames above the event loop say who is working.
    if "asyncio/runners.py" in paths:
        paths = paths[len(paths) - paths[::-1].index("asyncio/runners.py") :]
    for path in reversed(paths):
        for name, prefixes in BUCKETS:
            if path.startswith(prefixes):
                return name
    return EVENT_LOOP


@dataclass
class Breakdown:
    samples: int = 0
    buckets: collections.Counter[str] = field(default_factory=collections.Counter)
    leaves: collections.Counter[str] = field(default_factory=collections.Counter)
    """Self samples per function (leaf frame), for the top-N list."""


def categorize(raw: Path) -> Breakdown:
    """Read py-spy's ``--format raw`` output (``frame;frame;… count`` per line)."""
    result = Breakdown()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        result.samples += n
        result.buckets[bucket_of(frames)] += n
        leaf = _FRAME.match(frames[-1])
        where = f"{leaf['func']} ({_relative(leaf['path'])})" if leaf else frames[-1]
        result.leaves[where] += n
    return result


def render(b: Breakdown, *, by_process_ms: dict[str, float], runs: int, runs_per_s: float) -> list[str]:
    """Markdown: server CPU per run split by process, then the API process by bucket."""
    python_ms = sum(ms for name, ms in by_process_ms.items() if name != "redis-server")
    total_ms = sum(by_process_ms.values())
    lines = [
        f"Profiled phase: {runs} runs at {runs_per_s:.1f} runs/s, {b.samples} samples; server CPU "
        f"{total_ms:.2f} ms/run = "
        + " + ".join(f"{name} {ms:.2f}" for name, ms in sorted(by_process_ms.items(), key=lambda kv: -kv[1])),
        "",
        "| where (API process, Python; first matching frame from the leaf) | share of samples | ≈ ms/run |",
        "| --- | ---: | ---: |",
    ]
    for name, n in b.buckets.most_common():
        share = n / b.samples
        lines.append(f"| {name} | {share:.1%} | {share * python_ms:.2f} |")
    if "redis-server" in by_process_ms:
        lines.append(
            f"| *redis-server process (from /proc, not sampled)* | | {by_process_ms['redis-server']:.2f} |"
        )
    lines += ["", "Top functions by self samples:", "", "| function | self share |", "| --- | ---: |"]
    for where, n in b.leaves.most_common(12):
        lines.append(f"| `{where}` | {n / b.samples:.1%} |")
    return lines
