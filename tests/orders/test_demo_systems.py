"""The demo systems on their own (``interlock demo-systems``): the rules of each system,
idempotency keys, state kept across a restart, and the signed settlement callback."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from runs.webhooks import verify_signature
from tests.demo_systems import TRIGGER_SECRET, DemoSystemsProcess


def _post(demo: DemoSystemsProcess, path: str, body: Any = None, key: str | None = None) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key else {}
    r = demo.http.post(path, json=body, headers=headers)
    return r.status_code, r.json()


def test_each_system_keeps_its_books(demo: DemoSystemsProcess) -> None:
    order = f"o-{uuid.uuid4().hex[:8]}"
    before = demo.state()["stock"]["sku-hat"]
    status, held = _post(demo, "/inventory/reservations", {"order_id": order, "sku": "sku-hat", "qty": 4})
    assert status == 201 and held["status"] == "held"
    assert demo.state()["stock"]["sku-hat"] == before - 4
    status, released = _post(demo, f"/inventory/reservations/{held['reservation_id']}/release")
    assert status == 200 and released["status"] == "released"
    assert demo.state()["stock"]["sku-hat"] == before  # released twice is still once
    assert _post(demo, f"/inventory/reservations/{held['reservation_id']}/release")[0] == 200
    assert demo.state()["stock"]["sku-hat"] == before

    status, body = _post(demo, "/inventory/reservations", {"order_id": order, "sku": "sku-none", "qty": 1})
    assert (status, body["error"]) == (409, "out_of_stock")
    demo.out_of_stock("sku-hat")
    assert _post(demo, "/inventory/reservations", {"order_id": order, "sku": "sku-hat", "qty": 1})[0] == 409
    demo.clear_faults()

    status, payment = _post(
        demo, "/payments/authorizations", {"order_id": order, "customer_id": "c-1", "amount": 5}
    )
    pid = payment["payment_id"]
    assert status == 201 and payment["status"] == "authorized"
    assert _post(demo, f"/payments/{pid}/refund")[0] == 409  # nothing captured to refund
    assert _post(demo, f"/payments/{pid}/void")[1]["status"] == "voided"
    assert _post(demo, f"/payments/{pid}/capture")[0] == 409  # a voided authorization is gone
    big = _post(demo, "/payments/authorizations", {"order_id": order, "customer_id": "c-1", "amount": 20_000})
    assert big[0] == 402 and "card limit" in big[1]["reason"]

    assert demo.http.get("/payments/customers/c-013").json()["chargebacks"] == 2
    assert demo.http.get("/payments/customers/x-9").json()["known"] is False


def test_state_and_idempotency_survive_a_restart(demo: DemoSystemsProcess) -> None:
    order, key = f"o-{uuid.uuid4().hex[:8]}", f"k-{uuid.uuid4().hex}"
    body = {"order_id": order, "sku": "sku-mug", "qty": 1}
    status, first = _post(demo, "/inventory/reservations", body, key)
    assert status == 201
    demo.faults({"endpoint": "payments.capture", "errors": 3})
    demo.kill()  # SIGKILL: the file is all there is
    demo.start()
    assert demo.order(order)["reservations"] == [first]
    assert demo.state()["faults"][0]["errors"] == 3
    assert _post(demo, "/inventory/reservations", body, key) == (201, first)  # not applied again
    assert demo.idempotency()[key]["requests"] == 2 and demo.idempotency()[key]["applied"] == 1
    assert len(demo.order(order)["reservations"]) == 1
    # A key is for one endpoint only.
    assert (
        _post(demo, "/payments/authorizations", {"order_id": order, "customer_id": "c", "amount": 1}, key)[0]
        == 422
    )


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append((dict(self.headers), body))
        status = 503 if len(type(self).received) == 1 else 202  # the first delivery fails
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()


def test_the_settlement_is_signed_retried_and_sent_as_switched(
    demo: DemoSystemsProcess, tmp_path: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        demo.settlement(mode="twice", delay_s=0.1, url=url)
        order = f"o-{uuid.uuid4().hex[:8]}"
        pid = _post(demo, "/payments/authorizations", {"order_id": order, "customer_id": "c-1", "amount": 9})[
            1
        ]["payment_id"]
        assert _post(demo, f"/payments/{pid}/capture")[1]["status"] == "captured"
        deadline = time.monotonic() + 10
        while len(_Receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_Receiver.received) == 3  # one failed and retried, then the duplicate
        for headers, body in _Receiver.received:
            assert verify_signature(TRIGGER_SECRET, headers["X-Interlock-Signature"], body)
            event = json.loads(body)
            assert event == {
                "id": f"evt-settled-{pid}",
                "type": "payment.settled",
                "data": {"payment_id": pid, "order_id": order, "amount": 9.0},
            }
        assert demo.order(order)["payments"][0]["settled"] is True
        assert demo.state()["settlement"]["secret"] == "***"  # readable state, but not the secret
    finally:
        server.shutdown()
        server.server_close()
