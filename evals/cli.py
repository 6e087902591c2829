"""Command line of the evals: ``interlock eval …`` and ``python -m evals.cli {eval,export,manifest} …``.

``add_eval_command(subparsers)`` adds ``eval`` to any ``argparse`` sub-command set (the
``interlock`` command uses it); ``add_export_command`` and ``add_manifest_command`` do the
same for the other two. Each sets ``func``: ``args.func(args)`` returns the exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from core.errors import ConfigurationError
from core.redis import check_server, make_client, redis_connection
from core.settings import Settings
from evals.baseline import BASELINES_DIR
from evals.datasets import DATASETS_DIR, write_manifest
from evals.export import export_cases
from evals.nodes import resolve_node
from evals.runner import DEFAULT_SMOKE_CASES, RESULTS_DIR, EvalOptions, execute

__all__ = ["add_eval_command", "add_export_command", "add_manifest_command", "main"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_eval_command(subparsers: Any, name: str = "eval") -> argparse.ArgumentParser:
    """Add ``eval <graph.node> [--split dev|test] [--limit N] [--smoke] [--out DIR]
    [--update-baseline] [--concurrency N]`` to ``subparsers``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help="run a decision node over its eval dataset and grade it",
        description=(
            "Run a decision node over a dataset split with the configured model "
            "(INTERLOCK_LLM_*; the embedded local model when no URL is set), write "
            "<out>/<node>-<split>.json and .html, and exit 1 when accuracy falls more than "
            "the tolerance below the committed baseline."
        ),
    )
    p.add_argument("node", help="<graph_id>.<node>, e.g. support_triage.triage")
    p.add_argument("--split", choices=["dev", "test"], default=None, help="default dev (test with --smoke)")
    p.add_argument("--limit", type=_positive, default=None, help="run only the first N cases")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"quick check: first {DEFAULT_SMOKE_CASES} held-out cases (or --limit); fails on any "
        "answer outside the branches or when every answer is a fallback",
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help=f"output directory (default {RESULTS_DIR})")
    p.add_argument(
        "--update-baseline", action="store_true", help="record this run as the baseline for its split"
    )
    p.add_argument(
        "--concurrency",
        type=_positive,
        default=1,
        help="decisions in flight at once (default 1: the local model has one slot)",
    )
    p.add_argument("--datasets", type=Path, default=DATASETS_DIR, help=argparse.SUPPRESS)
    p.add_argument("--baselines", type=Path, default=BASELINES_DIR, help=argparse.SUPPRESS)
    p.add_argument("--base-url", default=None, help="override INTERLOCK_LLM_BASE_URL")
    p.add_argument("--model", default=None, help="override INTERLOCK_LLM_MODEL")
    p.add_argument(
        "--structured-output",
        choices=["json_schema", "json_object"],
        default=None,
        help="override INTERLOCK_LLM_STRUCTURED_OUTPUT",
    )
    p.add_argument(
        "--no-logprobs",
        action="store_true",
        help="do not ask for log-probabilities (servers that reject them); no confidence then",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_eval)
    return p


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "llm_base_url": args.base_url,
        "llm_model": args.model,
        "llm_structured_output": args.structured_output,
        "llm_logprobs": False if args.no_logprobs else None,
    }
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _eval(args: argparse.Namespace) -> int:
    # Under ``interlock``'s INFO logging httpx would log every request over the progress line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = EvalOptions(
        node=args.node,
        split=args.split,
        limit=args.limit,
        smoke=args.smoke,
        out_dir=args.out,
        update_baseline=args.update_baseline,
        concurrency=args.concurrency,
        datasets_dir=args.datasets,
        baselines_dir=args.baselines,
        progress=not args.quiet,
    )
    try:
        return asyncio.run(execute(options, _settings(args)))
    except ValueError as e:
        print(f"interlock eval: {e}", file=sys.stderr)
        return 2


def add_export_command(subparsers: Any, name: str = "export") -> argparse.ArgumentParser:
    """Add ``export --out FILE [--node graph.node]``: human decisions from the log as cases."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help="write the decisions people made or overrode as eval cases (JSONL)",
        description=(
            "Read the decisions log in Redis (REDIS_URL, INTERLOCK_KEY_PREFIX) and write one "
            "eval case per human decision. Without REDIS_URL: the embedded Redis in "
            "INTERLOCK_DATA_DIR (its socket if the service is running)."
        ),
    )
    p.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    p.add_argument("--node", default=None, help="only this <graph_id>.<node>")
    p.set_defaults(func=_export)
    return p


def _export(args: argparse.Namespace) -> int:
    settings = Settings()
    count = asyncio.run(_export_from(settings, args.out, args.node))
    print(f"wrote {count} case(s) to {args.out}")
    return 0


async def _export_from(settings: Settings, out: Path, node: str | None) -> int:
    url = settings.redis_url
    socket = (settings.data_dir / "redis" / "redis.sock").resolve()
    if url is None and socket.exists():
        # The service is running with its embedded Redis: read through its socket rather
        # than start a second server on the same files.
        url = f"unix://{socket}"
    if url is not None:
        client = make_client(url)
        try:
            await check_server(client)  # one clear line, not a traceback, when it is unreachable
            return await export_cases(client, settings.key_prefix, out, node=node)
        finally:
            await client.aclose()
    async with redis_connection(None, settings.data_dir, settings.redis_appendfsync) as (client, _):
        return await export_cases(client, settings.key_prefix, out, node=node)


def add_manifest_command(subparsers: Any, name: str = "manifest") -> argparse.ArgumentParser:
    """Add ``manifest <graph.node> --version V``: rewrite a dataset's manifest.json."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        name, help="rewrite a dataset's manifest.json (after editing its cases)"
    )
    p.add_argument("node", help="<graph_id>.<node>")
    p.add_argument("--version", required=True, help="new dataset_version, e.g. 2026-11-25.2")
    p.add_argument("--datasets", type=Path, default=DATASETS_DIR, help=argparse.SUPPRESS)
    p.set_defaults(func=_manifest)
    return p


def _manifest(args: argparse.Namespace) -> int:
    resolve_node(args.node)  # a dataset for a node that does not exist is a typo
    directory = args.datasets / args.node
    if not directory.is_dir():
        raise ConfigurationError(f"no dataset directory {directory}")
    manifest = write_manifest(directory, args.version)
    counts = ", ".join(f"{s} {v['cases']}" for s, v in manifest["splits"].items())
    print(
        f"{directory / 'manifest.json'}: version {args.version}; {counts}; per branch {manifest['per_branch']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.cli", description="Evals of decision nodes.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_command(sub)
    add_export_command(sub)
    add_manifest_command(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigurationError as e:
        print(f"{parser.prog} {args.command}: {e.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
