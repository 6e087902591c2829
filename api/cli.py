"""The ``interlock`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from core.errors import ConfigurationError
from core.metrics import configure_metrics, shutdown_metrics
from core.processes import freeze_startup_heap
from core.redis import check_server, make_client
from core.settings import Settings
from core.tracing import SERVICE_NAME, configure_tracing, shutdown_tracing
from graphs.registry import GraphRegistry
from runs.engine import open_engine


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app

    overrides = {"host": args.host, "port": args.port}
    if args.workers is not None:
        overrides["workers"] = args.workers
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    asyncio.run(_preflight(settings))
    app = create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        access_log=args.access_log,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        timeout_graceful_shutdown=10,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    """Workers without the HTTP API, until SIGTERM/SIGINT; then a graceful stop."""
    import os

    from core.processes import die_with_parent

    if parent := os.environ.get("INTERLOCK_PARENT_PID"):  # a child of `interlock serve`
        die_with_parent(int(parent))
    settings = Settings(**({"workers": args.workers} if args.workers is not None else {}))
    if not settings.redis_url:
        # Share the embedded Redis of an `interlock serve` on this machine, never start one:
        # workers on a Redis of their own would wait forever for runs.
        sock = (settings.data_dir / "redis" / "redis.sock").resolve()
        if not sock.exists():
            raise ConfigurationError(
                f"set REDIS_URL to the Redis of the API (no embedded Redis socket at {sock})"
            )
        settings = settings.model_copy(update={"redis_url": f"unix://{sock}"})
    asyncio.run(_preflight(settings))
    count = settings.workers or 1
    configure_metrics(SERVICE_NAME)  # OTLP when configured: workers serve no /metrics
    configure_tracing()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with open_engine(settings, workers=count) as engine:
            freeze_startup_heap()
            logging.getLogger("interlock").info(
                "%d worker(s) ready on %s: %s", count, engine.redis_url, [w.name for w in engine.workers]
            )
            await stop.wait()
            logging.getLogger("interlock").info(
                "stopping: in-flight runs get %s s", settings.shutdown_grace_s
            )

    # The event loop `interlock serve` gets from uvicorn: uvloop when installed.
    loop_factory = None
    if _has("uvloop"):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(run())
    shutdown_tracing()  # flush the spans of the last runs
    shutdown_metrics()
    return 0


async def _preflight(settings: Settings) -> None:
    """Fail fast, with one clear line, on configuration the service cannot run with
    (uvicorn would bury it in a lifespan traceback)."""
    GraphRegistry.load(settings.config)
    if settings.redis_url:
        client = make_client(settings.redis_url)
        try:
            await check_server(client)
        finally:
            await client.aclose()


def _keys(args: argparse.Namespace) -> int:
    """``interlock keys create|list|revoke`` on the service's Redis: REDIS_URL, else the
    socket of a running ``interlock serve``, else the embedded Redis started just for this."""
    import json

    from core.redis import redis_connection
    from store.apikeys import ApiKeyStore

    settings = Settings()
    url = settings.redis_url
    sock = (settings.data_dir / "redis" / "redis.sock").resolve()
    if url is None and sock.exists():
        url = f"unix://{sock}"

    async def run() -> int:
        async with redis_connection(url, settings.data_dir, settings.redis_appendfsync) as (client, _):
            keys = ApiKeyStore(client, prefix=settings.key_prefix)
            if args.keys_command == "create":
                key, record = await keys.create(
                    tenant=args.tenant, roles=args.role, name=args.name, groups=args.group or ()
                )
                print(json.dumps({"key": key, **record}, indent=2))
                print("interlock: the key is shown only now; store it safely", file=sys.stderr)
            elif args.keys_command == "list":
                for record in await keys.list(args.tenant):
                    print(json.dumps(record))
            elif not await keys.revoke(args.key_id):
                print(f"interlock: no key with id {args.key_id}", file=sys.stderr)
                return 1
        return 0

    return asyncio.run(run())


def _webhooks(args: argparse.Namespace) -> int:
    """``interlock webhooks secret``: the key receivers verify signatures with —
    ``INTERLOCK_WEBHOOK_SECRET`` when set, else the one kept in the service's Redis (made
    now if no process has needed it yet)."""
    from core.redis import redis_connection
    from store.webhooks import WebhookStore

    settings = Settings()
    if settings.webhook_secret and settings.webhook_secret.get_secret_value():
        print(settings.webhook_secret.get_secret_value())
        print("interlock: from INTERLOCK_WEBHOOK_SECRET", file=sys.stderr)
        return 0
    url = settings.redis_url
    sock = (settings.data_dir / "redis" / "redis.sock").resolve()
    if url is None and sock.exists():
        url = f"unix://{sock}"

    async def run() -> str:
        async with redis_connection(url, settings.data_dir, settings.redis_appendfsync) as (client, _):
            return await WebhookStore(client, prefix=settings.key_prefix).secret()

    print(asyncio.run(run()))
    return 0


def _tenant(value: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise argparse.ArgumentTypeError("a tenant is 1-64 letters, digits, '_', '.' or '-'")
    return value


def _model_serve(args: argparse.Namespace) -> int:
    """Run the embedded local model in the foreground until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from core.llm_server import EmbeddedLLM

    stop = threading.Event()
    llm = EmbeddedLLM(
        Settings().data_dir / "llm",
        port=args.port,
        host=args.host,
        threads=args.threads,
        slots=args.slots,
        ctx_size=args.ctx_size,
        cache_ram_mib=args.cache_ram_mib,
    )
    with llm:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(
            f"interlock: local model {llm.alias!r} at {llm.base_url} (log: {llm.log_path}); Ctrl-C stops it",
            flush=True,
        )
        while not stop.wait(0.5):
            assert llm.process is not None
            if llm.process.poll() is not None:
                print(
                    f"interlock: llama-server exited (code {llm.process.returncode}); see {llm.log_path}",
                    file=sys.stderr,
                )
                return 1
    return 0


def _demo_systems(args: argparse.Namespace) -> int:
    """The outside systems ``order_fulfillment`` calls, as their own HTTP service."""
    import os
    from pathlib import Path

    import uvicorn

    from graphs.order_fulfillment.demo_systems import create_app

    app = create_app(
        Path(args.data),
        callback_url=args.callback_url,
        callback_secret=os.environ.get("INTERLOCK_DEMO_CALLBACK_SECRET"),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="interlock", description="Durable AI-agent workflows on Redis.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API (and in-process workers)")
    serve.add_argument("--host", default=None, help="default 127.0.0.1 (INTERLOCK_HOST)")
    serve.add_argument("--port", type=int, default=None, help="default 8123 (INTERLOCK_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="in-process workers (INTERLOCK_WORKERS, default 1)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--access-log", action="store_true")
    serve.set_defaults(func=_serve)
    worker = sub.add_parser("worker", help="run workers only (no HTTP API), on REDIS_URL")
    worker.add_argument("--workers", type=int, default=None, help="worker loops in this process (default 1)")
    worker.set_defaults(func=_worker)
    keys = sub.add_parser("keys", help="API keys: create, list, revoke").add_subparsers(
        dest="keys_command", required=True
    )
    create = keys.add_parser("create", help="make a key (printed once)")
    create.add_argument("--tenant", type=_tenant, default="default", help="default: default")
    create.add_argument(
        "--role",
        action="append",
        required=True,
        choices=["viewer", "approver", "operator", "admin"],
        help="repeat for several roles",
    )
    create.add_argument("--name", default="", help="who or what the key is for")
    create.add_argument(
        "--group", action="append", help="a named group (approvals may go to one); repeatable"
    )
    create.set_defaults(func=_keys)
    listing = keys.add_parser("list", help="the keys (without their secrets)")
    listing.add_argument("--tenant", type=_tenant, default=None, help="only this tenant's")
    listing.set_defaults(func=_keys)
    revoke = keys.add_parser("revoke", help="delete a key by its id (effective within 5 s)")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_keys)
    webhooks = sub.add_parser("webhooks", help="run-completion webhooks").add_subparsers(
        dest="webhooks_command", required=True
    )
    webhooks.add_parser(
        "secret", help="print the secret that signs webhook requests (X-Interlock-Signature)"
    ).set_defaults(func=_webhooks)
    model = sub.add_parser("model", help="the embedded local LLM").add_subparsers(
        dest="model_command", required=True
    )
    model_serve = model.add_parser(
        "serve", help="serve SmolLM2 over the OpenAI API (llama-server) until Ctrl-C"
    )
    model_serve.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    model_serve.add_argument(
        "--port", type=int, default=8124, help="default 8124 (the service's default LLM URL)"
    )
    model_serve.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    model_serve.add_argument("--slots", type=int, default=1, help="requests decoded in parallel (default 1)")
    model_serve.add_argument(
        "--ctx-size", type=int, default=2048, help="KV-cache tokens shared by the slots (default 2048)"
    )
    model_serve.add_argument(
        "--cache-ram-mib", type=int, default=128, help="RAM for cached prompt prefixes (default 128)"
    )
    model_serve.set_defaults(func=_model_serve)
    demo = sub.add_parser(
        "demo-systems", help="serve the demo inventory, payments and shipping systems (order_fulfillment)"
    )
    demo.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    demo.add_argument("--port", type=int, default=8125, help="default 8125 (INTERLOCK_DEMO_SYSTEMS_URL's)")
    demo.add_argument(
        "--data", default=".interlock/demo-systems.json", help="state file (kept across restarts)"
    )
    demo.add_argument(
        "--callback-url",
        default=None,
        help="where settlement events go, e.g. http://127.0.0.1:8123/triggers/payment-settled "
        "(signed with $INTERLOCK_DEMO_CALLBACK_SECRET)",
    )
    demo.add_argument("--log-level", default="info")
    demo.set_defaults(func=_demo_systems)
    # The command line is the outermost shell: the one place allowed to reach evals/.
    from evals.cli import add_eval_command, add_export_command

    add_eval_command(sub)
    add_export_command(sub, name="export-decisions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpx2"):  # one line per LLM request drowns everything else
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ConfigurationError as e:
        print(f"interlock: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
