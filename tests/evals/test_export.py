"""Export of human decisions from a real Redis decisions log (written by the real RedisDecisionLog)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aredis

from evals.datasets import read_cases
from evals.export import export_cases
from store.decisions import RedisDecisionLog

ROOT = Path(__file__).resolve().parents[2]


def entry(method: str, chosen: str, **fields: Any) -> dict[str, Any]:
    """A log record shaped like the ones agents/nodes.py writes."""
    record: dict[str, Any] = {
        "graph_id": "support_triage",
        "node": "triage",
        "thread_id": "th-1",
        "run_id": "run-1",
        "inputs": {"ticket": "The app double-charged me, I want the extra 20 back"},
        "chosen": chosen,
        "candidates": ["refund", "answer", "technical", "escalate"],
        "method": method,
        "confidence": None,
        "model": "smollm2",
        "prompt_version": "abc123",
        "overrides": None,
        "decided_by": None,
        "comment": None,
        "ts": 1_764_000_000_000,
    }
    record.update(fields)
    return record


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_exports_every_human_decision(
    redis_client: aredis.Redis, key_prefix: str, tmp_path: Path
) -> None:
    log = RedisDecisionLog(redis_client, prefix=key_prefix)
    overridden = await log.append(entry("llm", "technical", confidence=0.55))
    await log.append(entry("llm", "answer", inputs={"ticket": "where is o-10063?"}, confidence=0.97))
    override = await log.append(
        entry(
            "human",
            "refund",
            overrides=overridden,
            decided_by="alice",
            comment="asks for money back",
            confidence=0.55,
        )
    )
    fallback = await log.append(entry("fallback", "escalate", inputs={"ticket": "ok"}))
    confirmed = await log.append(
        entry("human", "escalate", inputs={"ticket": "ok"}, overrides=fallback, decided_by="bob")
    )
    no_model = await log.append(entry("human", "answer", inputs={"ticket": "hours?"}, decided_by="carol"))
    await redis_client.xadd(f"{key_prefix}decisions", {"x": "no d field"})
    await redis_client.xadd(f"{key_prefix}decisions", {"d": "not json"})

    out = tmp_path / "human.jsonl"
    assert await export_cases(redis_client, key_prefix, out) == 3
    assert lines(out) == [
        {
            "id": f"human-{override}",
            "input": {"ticket": "The app double-charged me, I want the extra 20 back"},
            "expected": "refund",
            "notes": "human decision by alice: asks for money back; model chose technical (confidence 0.55)",
        },
        {
            "id": f"human-{confirmed}",
            "input": {"ticket": "ok"},
            "expected": "escalate",
            "notes": "human decision by bob; model chose escalate by fallback (confidence n/a)",
        },
        {
            "id": f"human-{no_model}",
            "input": {"ticket": "hours?"},
            "expected": "answer",
            "notes": "human decision by carol",
        },
    ]
    assert [c.expected for c in read_cases(out)] == ["refund", "escalate", "answer"]  # valid eval cases


async def test_latest_human_word_node_filter_and_trimmed_model_entries(
    redis_client: aredis.Redis, key_prefix: str, tmp_path: Path
) -> None:
    log = RedisDecisionLog(redis_client, prefix=key_prefix)
    model = await log.append(entry("llm", "answer", confidence=0.4))
    await log.append(entry("human", "technical", overrides=model, decided_by="dan"))
    second = await log.append(
        entry("human", "refund", overrides=model, decided_by="dan", comment="on reflection")
    )
    other = await log.append(
        entry("human", "approve", graph_id="expenses", node="approve_claim", decided_by="eve")
    )
    gone = await log.append(
        entry("human", "refund", overrides="1-0", model_choice="answer", confidence=0.31, decided_by=None)
    )

    out = tmp_path / "triage.jsonl"
    assert await export_cases(redis_client, key_prefix, out, node="support_triage.triage") == 2
    cases = lines(out)
    assert [c["id"] for c in cases] == [f"human-{second}", f"human-{gone}"]
    assert cases[0]["notes"] == "human decision by dan: on reflection; model chose answer (confidence 0.40)"
    # The model's entry was trimmed from the capped stream: the copy in the human entry is used.
    assert cases[1]["notes"] == "human decision by unknown; model chose answer (confidence 0.31)"

    assert await export_cases(redis_client, key_prefix, tmp_path / "all.jsonl") == 3
    assert f"human-{other}" in {c["id"] for c in lines(tmp_path / "all.jsonl")}


async def test_empty_or_missing_log(redis_client: aredis.Redis, key_prefix: str, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "none.jsonl"
    assert await export_cases(redis_client, key_prefix, out) == 0
    assert out.read_text(encoding="utf-8") == ""


async def test_reads_past_one_batch(redis_client: aredis.Redis, key_prefix: str, tmp_path: Path) -> None:
    log = RedisDecisionLog(redis_client, prefix=key_prefix)
    for i in range(1201):
        await log.append(entry("human", "answer", inputs={"ticket": f"question {i}"}, decided_by="f"))
    out = tmp_path / "many.jsonl"
    assert await export_cases(redis_client, key_prefix, out) == 1201
    assert lines(out)[-1]["input"] == {"ticket": "question 1200"}


async def test_cli_export(
    redis_client: aredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    log = RedisDecisionLog(redis_client, prefix=key_prefix)
    model = await log.append(entry("llm", "answer", confidence=0.5))
    await log.append(entry("human", "refund", overrides=model, decided_by="gil"))
    out = tmp_path / "cli.jsonl"
    env = {**os.environ, "REDIS_URL": redis_url, "INTERLOCK_KEY_PREFIX": key_prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "evals.cli",
        "export",
        "--out",
        str(out),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().strip() == f"wrote 1 case(s) to {out}"
    assert lines(out)[0]["expected"] == "refund"
