"""Arize Phoenix as a child process on loopback, for tests that read traces back.

Phoenix lives in a virtualenv of its own (``make phoenix-venv`` → ``.venv-phoenix``, or
``INTERLOCK_PHOENIX_PYTHON``): it brings ~200 packages (pandas, grpcio, SQLAlchemy, ldap3…)
and a pytest plugin that would fail this suite's ``filterwarnings = error`` at start-up,
none of which the service needs. It receives OTLP over HTTP only; see ``phoenix_server.py``
for what is done about its gRPC listener, and :meth:`PhoenixProcess.listening` for the check.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from core.processes import stop_process
from core.redis import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv-phoenix" / "bin" / "python"


def phoenix_python() -> Path | None:
    """The Python that has ``arize-phoenix`` installed, or None."""
    configured = os.environ.get("INTERLOCK_PHOENIX_PYTHON")
    path = Path(configured) if configured else VENV_PYTHON
    return path if path.exists() else None


def _listening_sockets(pid: int) -> list[tuple[str, int]]:
    """``(address, port)`` of every TCP socket process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 4), ("tcp6", 16)):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            found.append((str(ipaddress.ip_address(words)), int(port_hex, 16)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class PhoenixProcess:
    """``phoenix serve`` on 127.0.0.1, telemetry off, data in ``work_dir``."""

    def __init__(self, python: Path, work_dir: Path) -> None:
        self.python = python
        self.work_dir = work_dir
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work_dir / "phoenix.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def traces_endpoint(self) -> str:
        return f"{self.url}/v1/traces"

    def start(self, timeout_s: float = 180.0) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))},
            "PHOENIX_HOST": "127.0.0.1",
            "PHOENIX_PORT": str(self.port),
            # A free port of our own in case the listener ever comes back (see the check).
            "PHOENIX_GRPC_PORT": str(self.grpc_port),
            "PHOENIX_TELEMETRY_ENABLED": "false",
            "PHOENIX_WORKING_DIR": str(self.work_dir / "data"),
        }
        script = Path(__file__).with_name("phoenix_server.py")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(self.python), "-I", str(script)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"phoenix exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"phoenix did not start in {timeout_s}s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process, 30)

    def listening(self) -> list[tuple[str, int]]:
        """Where Phoenix listens; the caller asserts it is loopback only."""
        assert self.process is not None
        return _listening_sockets(self.process.pid)

    def grpc_reachable(self) -> bool:
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", self.grpc_port)) == 0

    def spans(self, project: str = "default") -> list[dict[str, Any]]:
        """Every span of the project, through the REST API (all pages)."""
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            reply = httpx.get(f"{self.url}/v1/projects/{project}/spans", params=params, timeout=10)
            reply.raise_for_status()
            body = reply.json()
            found += body["data"]
            cursor = body.get("next_cursor")
            if not cursor:
                return found

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        reply = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, timeout=10)
        reply.raise_for_status()
        body = reply.json()
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data
