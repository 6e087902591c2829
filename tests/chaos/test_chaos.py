"""Fault injection: an API process, two worker processes and a Redis of our own (AOF on);
runs of the ledger graph are submitted while workers are SIGKILLed or paused past their
lease, the API is restarted and Redis is SIGKILLed and restarted. At the end every
acknowledged run must have succeeded, no step's side effect may appear twice in the
ledger, and no run may be left running.

Bounded by ``CHAOS_SECONDS`` (default 40: the CI run); ``make chaos`` runs it for ten
minutes and writes ``bench/results/chaos.md``.

The second test does the same to ``order_fulfillment`` orders (started through the
signed ``order-created`` trigger, resumed by the demo systems' settlement callbacks),
for ``CHAOS_ORDER_SECONDS`` (default 12): no order may end with a reservation still held,
money captured without a shipment, or a side effect applied twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from api.routes.triggers import SIGNATURE_HEADER
from core.redis import EmbeddedRedis, free_port
from runs.webhooks import sign
from tests.demo_systems import TRIGGER_SECRET, DemoSystemsProcess
from tests.fakes.openai_server import start_fake_openai
from tests.service import ServiceProcess

CHAOS_SECONDS = float(os.environ.get("CHAOS_SECONDS", "40"))
CHAOS_ORDER_SECONDS = float(os.environ.get("CHAOS_ORDER_SECONDS", "12"))
REPORT = os.environ.get("CHAOS_REPORT")
LEASE_MS = 1500
STEPS = 5
GRAPH = Path(__file__).parent.parent / "runs" / "ledger_graph.py"


class Chaos:
    def __init__(
        self, tmp: Path, extra_env: dict[str, str] | None = None, *, api_port: int | None = None
    ) -> None:
        # appendfsync always, the default: with everysec a Redis SIGKILL may drop writes it
        # acknowledged while a slow fsync held the AOF write back.
        self.redis = EmbeddedRedis(tmp / "redis", appendfsync="always", port=free_port())
        self.url = self.redis.start()
        self.prefix = f"t:{uuid.uuid4().hex[:12]}:"
        config = tmp / "langgraph.json"
        config.write_text(json.dumps({"graphs": {"ledger": f"{GRAPH}:graph"}}))
        env = {
            "REDIS_URL": self.url,
            "INTERLOCK_KEY_PREFIX": self.prefix,
            "INTERLOCK_CONFIG": str(config),
            "INTERLOCK_LEASE_MS": str(LEASE_MS),
            "INTERLOCK_LOCAL_LLM": "false",
            "INTERLOCK_SHUTDOWN_GRACE_S": "0",
            "INTERLOCK_DATA_DIR": str(tmp / "data"),
            "LEDGER_STEP_SECONDS": "0.2",
            **(extra_env or {}),
        }
        self.api = ServiceProcess({**env, "INTERLOCK_WORKERS": "0"}, tmp / "api.log", port=api_port)
        self.workers = [ServiceProcess(env, tmp / f"worker{i}.log", command="worker") for i in range(2)]
        self.db = redis.Redis.from_url(self.url, socket_timeout=5)
        self.counts = {"kills": 0, "pauses": 0, "api_restarts": 0, "redis_restarts": 0, "refused": 0}
        self.resume_s: list[float] = []

    def start(self) -> None:
        self.api.start()
        for w in self.workers:
            w.start()

    def stop(self) -> None:
        for p in [*self.workers, self.api]:
            p.stop()
        self.db.close()
        self.redis.stop()

    def submit(self, http: httpx.Client) -> tuple[str, str] | None:
        """One run; returned only when the API acknowledged it (2xx)."""
        try:
            thread = http.post("/threads", json={})
            if thread.status_code != 200:
                self.counts["refused"] += 1
                return None
            tid = thread.json()["thread_id"]
            run = http.post(f"/threads/{tid}/runs", json={"assistant_id": "ledger", "input": {"n": 0}})
        except httpx.HTTPError:
            self.counts["refused"] += 1
            return None
        if run.status_code != 200:
            self.counts["refused"] += 1
            return None
        return tid, run.json()["run_id"]

    def run_record(self, tid: str, rid: str) -> dict[bytes, bytes]:
        raw: Any = self.db.hgetall(f"{self.prefix}run:{{{tid}}}:{rid}")
        return dict(raw)

    def kill_worker(self, runs: list[tuple[str, str]]) -> None:
        worker = random.choice(self.workers)
        owned = [
            (t, r, int(rec.get(b"epoch", b"0")))
            for t, r in runs
            if (rec := self.run_record(t, r)).get(b"status") == b"running"
            and str(worker.pid) in rec.get(b"worker", b"").decode()
        ]
        worker.kill()
        self.counts["kills"] += 1
        killed_at = time.monotonic()
        worker.start()
        # Time to resume: until every run the dead worker owned has a new owner.
        waiting = list(owned)
        while waiting and time.monotonic() - killed_at < 30:
            for item in list(waiting):
                t, r, epoch = item
                rec = self.run_record(t, r)
                if int(rec.get(b"epoch", b"0")) > epoch or rec.get(b"status") != b"running":
                    self.resume_s.append(time.monotonic() - killed_at)
                    waiting.remove(item)
            time.sleep(0.02)

    def pause_worker(self) -> None:
        worker = random.choice(self.workers)
        worker.send(signal.SIGSTOP)
        time.sleep(2 * LEASE_MS / 1000)
        worker.send(signal.SIGCONT)
        self.counts["pauses"] += 1

    def restart_api(self) -> None:
        self.api.restart()
        self.counts["api_restarts"] += 1

    def restart_redis(self) -> None:
        self.redis.kill()
        self.redis.start()
        self.counts["redis_restarts"] += 1


def test_nothing_acknowledged_is_lost_or_done_twice(tmp_path: Path) -> None:
    chaos = Chaos(tmp_path)
    chaos.start()
    runs: list[tuple[str, str]] = []
    faults = [chaos.pause_worker, chaos.restart_api, chaos.restart_redis]
    started = time.monotonic()
    try:
        with httpx.Client(
            base_url=chaos.api.url, timeout=10, headers={"x-api-key": chaos.api.api_key}
        ) as http:
            round_no = 0
            while time.monotonic() - started < CHAOS_SECONDS:
                for _ in range(4):
                    if (acked := chaos.submit(http)) is not None:
                        runs.append(acked)
                time.sleep(random.uniform(0.2, 0.8))
                # Every round kills a worker; every other round adds one more fault.
                chaos.kill_worker(runs)
                if round_no % 2 == 1:
                    random.choice(faults)()
                round_no += 1
        # Settle: every acknowledged run must end.
        deadline = time.monotonic() + 120
        pending = list(runs)
        while pending and time.monotonic() < deadline:
            pending = [
                (t, r)
                for t, r in pending
                if chaos.run_record(t, r).get(b"status") in (b"pending", b"running")
            ]
            time.sleep(0.2)
        statuses = [chaos.run_record(t, r).get(b"status", b"missing").decode() for t, r in runs]
        duplicated = 0
        for tid, _ in runs:
            ledger: Any = chaos.db.hgetall(f"{chaos.prefix}ledger:{{{tid}}}")
            duplicated += sum(int(v) - 1 for v in ledger.values() if int(v) > 1)
            missing = STEPS - len(ledger)
            assert missing == 0 or statuses[runs.index((tid, _))] != "success", f"{tid}: steps missing"
    finally:
        chaos.stop()
    lost = sum(s != "success" for s in statuses)
    stuck = sum(s in ("pending", "running") for s in statuses)
    figures = {
        "seconds": round(time.monotonic() - started, 1),
        "runs": len(runs),
        **chaos.counts,
        "lost": lost,
        "stuck": stuck,
        "duplicated": duplicated,
        "resume_p50_s": round(statistics.median(chaos.resume_s), 2) if chaos.resume_s else None,
        "resume_p99_s": round(sorted(chaos.resume_s)[int(0.99 * (len(chaos.resume_s) - 1))], 2)
        if chaos.resume_s
        else None,
        "resumed_runs": len(chaos.resume_s),
    }
    print("chaos:", figures)
    if REPORT:
        _report(Path(REPORT), figures)
    assert len(runs) >= 8, figures
    assert chaos.counts["kills"] >= 2, figures
    assert (lost, stuck, duplicated) == (0, 0, 0), (figures, statuses)


def _report(path: Path, figures: dict[str, Any]) -> None:
    rows = "\n".join(f"| {k} | {v} |" for k, v in figures.items())
    path.write_text(
        "# Chaos run\n\n"
        f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: 2 cores\n"
        "- API + 2 worker processes + embedded redis-server 6.2 (AOF, appendfsync always); "
        f"lease {LEASE_MS} ms; ledger graph of {STEPS} steps × 0.2 s; each round submits 4 runs, "
        "SIGKILLs a random worker (restarted at once), and every other round also pauses a worker "
        "past its lease, restarts the API, or SIGKILLs and restarts Redis\n"
        "- lost = acknowledged runs not ending in success; duplicated = side effects applied more "
        "than once (ledger); resume = time from a worker's SIGKILL until each run it owned has a new "
        "owner\n\n| figure | value |\n| --- | ---: |\n" + rows + "\n"
    )


def _report_orders(path: Path, figures: dict[str, Any]) -> None:
    """Append the orders' section to the report the first test wrote (or start one)."""
    rows = "\n".join(f"| {k} | {v} |" for k, v in figures.items())
    before = path.read_text() if path.exists() else "# Chaos run\n"
    before = before.split("\n## order_fulfillment under chaos", 1)[0].rstrip("\n")
    path.write_text(
        before + "\n\n## order_fulfillment under chaos (same run)\n\n"
        "`order_fulfillment` orders started through the signed `order-created` trigger and "
        "resumed by the demo systems' settlement callbacks, while workers are SIGKILLed and "
        "paused past their lease; afterwards every order must have ended as its kind says, with "
        "no reservation left held, no money captured without a shipment, and nothing applied "
        "twice (the demo systems' own books and their request counts per idempotency key).\n\n"
        "| figure | value |\n| --- | ---: |\n" + rows + "\n"
    )


ORDER_SECRET = "chaos-order-secret-0123456789"


def _order(kind: str, n: int) -> dict[str, Any]:
    """An order that should end ``fulfilled`` (kind ``ok``) or ``cancelled`` (``oos``: an
    SKU switched out of stock; ``declined``: above the card limit; ``risky``: a customer
    with chargebacks, whom the risk decision rejects)."""
    customer = {"risky": "c-013"}.get(kind, f"c-{1 + n % 10:03d}")
    items = [{"sku": "sku-mug", "qty": 1 + n % 3}, {"sku": "sku-tee", "qty": 1}]
    if kind == "oos":
        items.append({"sku": "sku-hat", "qty": 1})
    return {
        "order_id": f"o-{uuid.uuid4().hex[:10]}",
        "customer_id": customer,
        "items": items,
        "amount": 12_000.0 if kind == "declined" else 40.0 + n % 200,
    }


def test_orders_are_never_left_half_done_when_workers_die(tmp_path: Path) -> None:
    fake_llm = start_fake_openai()
    api_port = free_port()
    demo = DemoSystemsProcess(
        tmp_path / "demo.json",
        tmp_path / "demo.log",
        callback_url=f"http://127.0.0.1:{api_port}/triggers/payment-settled",
    )
    demo.start()
    triggers = [
        {"name": "payment-settled", "secret": TRIGGER_SECRET, "action": "resume",
         "event": "payment.settled", "correlation": "payment_id"},
        {"name": "order-created", "secret": ORDER_SECRET, "action": "start",
         "graph_id": "order_fulfillment", "event": "order.created"},
    ]  # fmt: skip
    chaos = Chaos(
        tmp_path,
        {
            "INTERLOCK_DEMO_SYSTEMS_URL": demo.url,
            "INTERLOCK_TRIGGERS": json.dumps(triggers),
            "INTERLOCK_LLM_BASE_URL": fake_llm.base_url,
            "INTERLOCK_NEAREST_EXAMPLES": "false",
        },
        api_port=api_port,
    )
    demo.out_of_stock("sku-hat")
    demo.settlement(mode="once", delay_s=0.3)
    # Slow calls widen the windows a kill can land in.
    demo.faults(
        *(
            {"endpoint": e, "latency_ms": 150}
            for e in ("inventory.reserve", "payments.authorize", "payments.capture")
        )
    )
    chaos.start()
    orders: list[tuple[str, str, dict[str, Any]]] = []  # (kind, thread id, order)
    runs: list[tuple[str, str]] = []
    kinds = ["ok"] * 6 + ["oos", "declined", "risky"]
    started = time.monotonic()
    try:
        with httpx.Client(base_url=chaos.api.url, timeout=10) as http:
            n = 0
            while time.monotonic() - started < CHAOS_ORDER_SECONDS:
                for _ in range(3):
                    kind = kinds[n % len(kinds)]
                    order = _order(kind, n)
                    n += 1
                    body = json.dumps(
                        {"id": f"evt-{order['order_id']}", "type": "order.created", "data": order}
                    )
                    headers = {
                        SIGNATURE_HEADER: sign(ORDER_SECRET, body.encode()),
                        "content-type": "application/json",
                    }
                    try:
                        answer = http.post("/triggers/order-created", content=body, headers=headers)
                    except httpx.HTTPError:
                        chaos.counts["refused"] += 1
                        continue
                    if answer.status_code != 202:
                        chaos.counts["refused"] += 1
                        continue
                    orders.append((kind, answer.json()["thread_id"], order))
                    runs.append((answer.json()["thread_id"], answer.json()["run_id"]))
                time.sleep(random.uniform(0.1, 0.5))
                chaos.kill_worker(runs)
                if random.random() < 0.3:
                    chaos.pause_worker()
            # Settle: every acknowledged order must reach its end.
            outcome: dict[str, str] = {}
            deadline = time.monotonic() + 90
            while len(outcome) < len(orders) and time.monotonic() < deadline:
                for _, tid, _ in orders:
                    if tid in outcome:
                        continue
                    thread = http.get(f"/threads/{tid}", headers={"x-api-key": chaos.api.api_key}).json()
                    status = (thread.get("values") or {}).get("status")
                    if thread["status"] in ("idle", "error") and status in (
                        "fulfilled",
                        "cancelled",
                        "failed",
                    ):
                        outcome[tid] = status
                    elif thread["status"] == "error":
                        outcome[tid] = "error"
                time.sleep(0.2)
        books = demo.state()
    finally:
        chaos.stop()
        demo.close()
        fake_llm.stop()
    expected = {"ok": "fulfilled", "oos": "cancelled", "declined": "cancelled", "risky": "cancelled"}
    wrong = [(kind, tid, outcome.get(tid, "unfinished")) for kind, tid, _ in orders
             if outcome.get(tid) != expected[kind]]  # fmt: skip
    by_order: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for kind in ("reservations", "payments", "shipments"):
        for record in books[kind].values():
            by_order.setdefault(record["order_id"], {}).setdefault(kind, []).append(record)
    leaked, charged_unshipped, twice = [], [], []
    for _, _, order in orders:
        mine = by_order.get(order["order_id"], {})
        reservations, payments, shipments = (
            mine.get(k, []) for k in ("reservations", "payments", "shipments")
        )
        leaked += [r["reservation_id"] for r in reservations if r["status"] == "held"]
        charged_unshipped += [
            p["payment_id"] for p in payments if p["status"] == "captured" and not shipments
        ]
        if len(reservations) > len(order["items"]) or len(payments) > 1 or len(shipments) > 1:
            twice.append(order["order_id"])
    twice += [k for k, v in books["idempotency"].items() if v["applied"] > 1]
    figures = {
        "seconds": round(time.monotonic() - started, 1),
        "orders": len(orders),
        **{k: chaos.counts[k] for k in ("kills", "pauses", "refused")},
        "fulfilled": sum(s == "fulfilled" for s in outcome.values()),
        "cancelled": sum(s == "cancelled" for s in outcome.values()),
        "wrong_outcome": len(wrong),
        "leaked_reservations": len(leaked),
        "captured_without_shipment": len(charged_unshipped),
        "applied_twice": len(twice),
    }
    print("order chaos:", figures)
    if REPORT:
        _report_orders(Path(REPORT), figures)
    assert len(orders) >= 6 and chaos.counts["kills"] >= 2, figures
    assert (wrong, leaked, charged_unshipped, twice) == ([], [], [], []), figures
