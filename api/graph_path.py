"""The path a thread (or one of its runs) took through its graph, from its checkpoints:
which nodes ran, in which step, when they finished and how long they took, and where it
waits now. The approvals API and the console show it."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Any

from runs.compile import CompiledGraph


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def graph_path(graph: CompiledGraph, thread_id: str, run_id: str | None = None) -> dict[str, Any]:
    """``{"steps": [{node, step, finished_at, duration_ms, run_id}], "waiting": [nodes]}``,
    oldest first; with ``run_id``, only that run's steps."""
    snapshots = [s async for s in graph.aget_state_history({"configurable": {"thread_id": thread_id}})]
    snapshots.reverse()
    steps: list[dict[str, Any]] = []
    for before, after in itertools.pairwise(snapshots):
        meta = after.metadata or {}
        if run_id is not None and meta.get("run_id") != run_id:
            continue
        start, end = _ts(before.created_at), _ts(after.created_at)
        duration = (end - start).total_seconds() * 1000 if start and end else None
        for task in before.tasks:
            if task.name.startswith("__"):
                continue
            steps.append(
                {
                    "node": task.name,
                    "step": meta.get("step"),
                    "finished_at": after.created_at,
                    "duration_ms": round(duration, 1) if duration is not None else None,
                    "run_id": meta.get("run_id"),
                }
            )
    waiting = [t.name for t in snapshots[-1].tasks if t.interrupts] if snapshots else []
    return {"steps": steps, "waiting": waiting}
