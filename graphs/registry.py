"""Which graphs this service can run: the built-in ones plus the user's.

Users add graphs the way ``langgraph.json`` does: ``INTERLOCK_CONFIG`` names a JSON file
``{"graphs": {"my_graph": "./path/to/file.py:graph"}}``; paths are relative to that file.
The target may be a ``StateGraph`` builder, a compiled graph, or a function returning
either. The registry only *builds*; the composition root (``runs/``) compiles each graph
once, with the checkpointer.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from core import jsonutil
from core.errors import ConfigurationError, NotFound

BUILTIN_GRAPHS: dict[str, str] = {
    "support_triage": "graphs.support_triage:build_graph",
    "order_fulfillment": "graphs.order_fulfillment:build_graph",
    "reconcile_payments": "graphs.reconcile_payments:build_graph",
}


@dataclass(frozen=True)
class GraphEntry:
    """One registered graph, not yet compiled."""

    graph_id: str
    builder: StateGraph[Any, Any, Any, Any]
    source: str
    """Where it came from (``module:attr`` or ``file.py:attr``)."""
    compile_kwargs: Mapping[str, Any] = field(default_factory=dict)
    """``interrupt_before``/``interrupt_after`` a user compiled in, kept on recompile."""
    description: str | None = None


def _load_target(spec: str, base_dir: Path | None) -> tuple[Any, ModuleType]:
    if ":" not in spec:
        raise ConfigurationError(f"graph '{spec}' must look like 'path/to/file.py:name' or 'module:name'")
    location, _, attr = spec.rpartition(":")
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.exists():
            raise ConfigurationError(f"graph file {path} (from '{spec}') does not exist")
        module_name = f"interlock_user_graph_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(location)
    try:
        return getattr(module, attr), module
    except AttributeError:
        raise ConfigurationError(f"'{location}' has no attribute '{attr}' (from '{spec}')") from None


def _summary(module: ModuleType) -> str | None:
    """First paragraph of the module's docstring: what the graph is for."""
    doc = inspect.getdoc(module)
    return doc.split("\n\n", 1)[0].strip() if doc else None


def load_graph(graph_id: str, spec: str, base_dir: Path | None = None) -> GraphEntry:
    """Import ``spec`` and return it as a registry entry."""
    target, module = _load_target(spec, base_dir)
    description = _summary(module)
    if callable(target) and not isinstance(target, StateGraph | CompiledStateGraph):
        target = target()
    if isinstance(target, CompiledStateGraph):
        kwargs = {
            "interrupt_before": target.interrupt_before_nodes or None,
            "interrupt_after": target.interrupt_after_nodes or None,
        }
        return GraphEntry(graph_id, target.builder, spec, {k: v for k, v in kwargs.items() if v}, description)
    if isinstance(target, StateGraph):
        return GraphEntry(graph_id, target, spec, description=description)
    raise ConfigurationError(
        f"graph '{graph_id}' ({spec}) is a {type(target).__name__}, not a StateGraph or compiled graph"
    )


class GraphRegistry:
    """Graph id → entry. Built once at start-up."""

    def __init__(self, entries: Mapping[str, GraphEntry]) -> None:
        self._entries = dict(entries)

    @classmethod
    def load(cls, config: Path | None = None) -> GraphRegistry:
        specs: dict[str, tuple[str, Path | None]] = {gid: (s, None) for gid, s in BUILTIN_GRAPHS.items()}
        if config is not None:
            if not config.exists():
                raise ConfigurationError(f"INTERLOCK_CONFIG points at {config}, which does not exist")
            try:
                doc = jsonutil.loads(config.read_bytes())
                graphs = doc["graphs"]
                assert isinstance(graphs, dict)
            except Exception as e:
                raise ConfigurationError(
                    f'{config} must be JSON like {{"graphs": {{"id": "file.py:graph"}}}} ({e})'
                ) from e
            for graph_id, spec in graphs.items():
                specs[graph_id] = (spec, config.parent.resolve())
        return cls({gid: load_graph(gid, spec, base) for gid, (spec, base) in specs.items()})

    def get(self, graph_id: str) -> GraphEntry:
        try:
            return self._entries[graph_id]
        except KeyError:
            raise NotFound(f"graph '{graph_id}' is not registered; known: {sorted(self._entries)}") from None

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self._entries

    def ids(self) -> list[str]:
        return list(self._entries)
