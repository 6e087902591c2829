"""Find a decision node by its eval name, ``<graph_id>.<node>`` (e.g. ``support_triage.triage``).

The graph id names a package under ``graphs/``; the node is the module-level
:class:`~agents.decision.DecisionSpec` of that package whose ``name`` matches. Evals thus
run the very spec the graph runs, not a copy.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import graphs
from agents.decision import DecisionSpec
from core.errors import ConfigurationError

__all__ = ["available_nodes", "resolve_node", "specs_in"]


def specs_in(module: ModuleType) -> list[DecisionSpec]:
    """The decision specs a graph module declares at module level, in definition order."""
    found: list[DecisionSpec] = []
    for value in vars(module).values():
        if isinstance(value, DecisionSpec) and all(value is not s for s in found):
            found.append(value)
    return found


def _graph_ids() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(graphs.__path__) if m.ispkg)


def available_nodes() -> list[str]:
    """Every ``<graph_id>.<node>`` that can be evaluated (graphs that fail to import are skipped)."""
    names: list[str] = []
    for graph_id in _graph_ids():
        try:
            module = importlib.import_module(f"graphs.{graph_id}")
        except Exception:
            continue
        names += [f"{graph_id}.{spec.name}" for spec in specs_in(module)]
    return names


def resolve_node(name: str) -> tuple[str, DecisionSpec]:
    """``(graph_id, spec)`` for ``name`` = ``<graph_id>.<node>``.

    Raises:
        ConfigurationError: the name is malformed, the graph does not exist, or it declares
            no decision node of that name; the message lists what does exist.
    """
    graph_id, dot, node = name.partition(".")
    if not dot or not graph_id or not node:
        raise ConfigurationError(
            f"node {name!r} must look like <graph_id>.<node>; available: {_listing(available_nodes())}"
        )
    if graph_id not in _graph_ids():
        raise ConfigurationError(
            f"no graph {graph_id!r} in graphs/ (graphs: {_listing(_graph_ids())}); "
            f"decision nodes: {_listing(available_nodes())}"
        )
    module = importlib.import_module(f"graphs.{graph_id}")
    specs = specs_in(module)
    for spec in specs:
        if spec.name == node:
            return graph_id, spec
    declared = [f"{graph_id}.{s.name}" for s in specs]
    raise ConfigurationError(
        f"graph {graph_id!r} declares no decision node {node!r}; it declares: {_listing(declared)}"
    )


def _listing(names: list[str]) -> str:
    return ", ".join(names) if names else "none"
