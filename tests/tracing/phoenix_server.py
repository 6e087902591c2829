"""Start Arize Phoenix (``phoenix serve``) without its OTLP/gRPC listener.

Run with the Python of Phoenix's own virtualenv (``make phoenix-venv``), never imported by
Interlock. Phoenix 20.26.1 binds its gRPC collector to ``[::]:PHOENIX_GRPC_PORT`` whatever
``PHOENIX_HOST`` says, so anyone who reaches the machine could send it spans; the tests
only send OTLP over HTTP (which honours ``PHOENIX_HOST=127.0.0.1``), so the gRPC server
is replaced by one that listens nowhere. ``tests/tracing/phoenix_backend.py`` checks afterwards
that every socket the process listens on is a loopback one.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

import phoenix.server.app as app
from phoenix.server.grpc_server import GrpcServer


class NoGrpcServer(GrpcServer):  # type: ignore[misc]
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *args: Any, **kwargs: Any) -> None:
        return None


app.GrpcServer = NoGrpcServer  # looked up by name when the app's lifespan starts
sys.argv = ["phoenix", "serve"]
runpy.run_module("phoenix.server.main", run_name="__main__")
