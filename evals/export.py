"""Turn the decisions people made into eval cases.

The decisions log is the Redis Stream ``<prefix>decisions``; each entry's field ``d`` is
a JSON record (``graph_id``, ``node``, ``inputs``, ``chosen``, ``method``, ``confidence``,
``overrides``, ``decided_by``, ``comment``, …; see ``store/decisions.py``). Every entry
with ``method == "human"`` becomes a case: the inputs the model saw, labelled with what
the person chose. When it replaced a model decision (``overrides`` is that entry's stream
id) the notes say what the model had chosen, so reviewers' corrections become exactly the
cases the model gets wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aredis

from evals.datasets import Case

__all__ = ["export_cases", "iter_log", "notes_for"]

logger = logging.getLogger(__name__)

_BATCH = 500


async def iter_log(redis: aredis.Redis, key: str) -> list[tuple[str, dict[str, Any]]]:
    """Every readable entry of the stream at ``key``, oldest first, as ``(id, record)``.

    Entries without a ``d`` field or whose ``d`` is not a JSON object are skipped (logged).
    """
    entries: list[tuple[str, dict[str, Any]]] = []
    low = "-"
    while True:
        batch: Any = await redis.xrange(key, low, "+", count=_BATCH)
        for raw_id, fields in batch:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            record = _record(fields)
            if record is None:
                logger.warning("decisions log %s: entry %s has no readable 'd' field; skipped", key, entry_id)
                continue
            entries.append((entry_id, record))
        if len(batch) < _BATCH:
            return entries
        last = batch[-1][0]
        low = "(" + (last.decode() if isinstance(last, bytes) else str(last))


def _record(fields: Any) -> dict[str, Any] | None:
    raw = fields.get(b"d", fields.get("d")) if isinstance(fields, dict) else None
    if raw is None:
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _node_name(record: dict[str, Any]) -> str:
    return f"{record.get('graph_id') or '?'}.{record.get('node') or '?'}"


def notes_for(human: dict[str, Any], model: dict[str, Any] | None) -> str:
    """``human decision by <who>: <comment>; model chose <branch> (confidence c)``."""
    who = human.get("decided_by") or "unknown"
    comment = human.get("comment")
    notes = f"human decision by {who}" + (f": {comment}" if comment else "")
    overrides = human.get("overrides")
    if model is not None:
        chosen, confidence, method = model.get("chosen"), model.get("confidence"), model.get("method")
    elif overrides and human.get("model_choice"):
        # The model's entry was trimmed from the capped stream; the human entry keeps a copy.
        chosen, confidence, method = human.get("model_choice"), human.get("confidence"), None
    else:
        return notes + (f"; overridden decision {overrides} is no longer in the log" if overrides else "")
    shown = f"{confidence:.2f}" if isinstance(confidence, int | float) else "n/a"
    via = " by fallback" if method == "fallback" else ""
    return f"{notes}; model chose {chosen}{via} (confidence {shown})"


def _cases(entries: list[tuple[str, dict[str, Any]]], node: str | None) -> Iterator[Case]:
    by_id = {entry_id: record for entry_id, record in entries}
    latest: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry_id, record in entries:
        if record.get("method") != "human":
            continue
        if node is not None and _node_name(record) != node:
            continue
        if not isinstance(record.get("inputs"), dict) or not isinstance(record.get("chosen"), str):
            logger.warning(
                "decisions log entry %s: human decision without inputs or chosen; skipped", entry_id
            )
            continue
        # A person revising their own call on the same model decision: the last word counts.
        key = str(record.get("overrides") or entry_id)
        latest.pop(key, None)
        latest[key] = (entry_id, record)
    for entry_id, record in latest.values():
        overrides = record.get("overrides")
        model = by_id.get(overrides) if isinstance(overrides, str) else None
        if model is not None and model.get("method") == "human":
            model = None
        yield Case(
            id=f"human-{entry_id}",
            input=record["inputs"],
            expected=record["chosen"],
            notes=notes_for(record, model),
        )


async def export_cases(redis: aredis.Redis, prefix: str, out_path: Path, *, node: str | None = None) -> int:
    """Write a JSONL eval case for every human decision in the log; return how many.

    Args:
        redis: client of the Redis holding the log.
        prefix: the deployment's key prefix (``Settings.key_prefix``).
        out_path: JSONL file to write (replaced).
        node: only decisions of this ``<graph_id>.<node>``; None exports every node's.

    Case ids are ``human-<stream id>``; a later human decision on the same model decision
    replaces an earlier one.
    """
    entries = await iter_log(redis, f"{prefix}decisions")
    cases = list(_cases(entries, node))
    text = "".join(json.dumps(c.model_dump(exclude_none=True), ensure_ascii=False) + "\n" for c in cases)
    await asyncio.to_thread(_write, Path(out_path), text)
    return len(cases)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
