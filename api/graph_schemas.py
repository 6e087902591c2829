"""JSON schemas of a compiled graph, shaped as the Agent Server shows them
(``GET /assistants/{id}/schemas`` and ``/subgraphs``)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from langgraph.pregel import Pregel
from pydantic import TypeAdapter, create_model

log = logging.getLogger("interlock.api")

_INTERNAL_CONFIGURABLE = (
    "__pregel_checkpointer",
    "__pregel_store",
    "checkpoint_id",
    "checkpoint_ns",
    "thread_id",
)
"""Keys the runtime sets in ``configurable``: not for clients to send."""


def _state_jsonschema(graph: Pregel[Any, Any, Any, Any]) -> dict[str, Any]:
    """The state's channels as one object schema; a channel pydantic cannot describe is Any."""
    fields: dict[str, Any] = {}
    for name in graph.stream_channels_list:
        update_type = getattr(graph.channels[name], "UpdateType", Any)
        try:
            TypeAdapter(update_type).json_schema()
            fields[name] = (update_type, None)
        except Exception:
            fields[name] = (Any, None)
    schema: dict[str, Any] = create_model(graph.get_name("State"), **fields).model_json_schema()
    return schema


def _configurable_jsonschema(graph: Pregel[Any, Any, Any, Any]) -> dict[str, Any]:
    """The schema of ``config.configurable`` (langgraph < 0.6 style graphs), or {}."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # config_schema() is deprecated in favour of context
        model = graph.config_schema()
    fields = getattr(model, "model_fields", {})
    if "configurable" not in fields:
        return {}
    annotation: Any = fields["configurable"].annotation
    schema: dict[str, Any] = TypeAdapter(annotation).json_schema()
    for internal in _INTERNAL_CONFIGURABLE:
        schema.get("properties", {}).pop(internal, None)
    return schema


def _schema_or_none(
    graph: Pregel[Any, Any, Any, Any], what: str, build: Callable[[], dict[str, Any] | None]
) -> dict[str, Any] | None:
    try:
        return build()
    except Exception as e:
        log.info("graph %s has no JSON %s schema: %s: %s", graph.name, what, type(e).__name__, e)
        return None


_SCHEMAS = ("input_schema", "output_schema", "state_schema", "config_schema", "context_schema")


def graph_schemas(graph: Pregel[Any, Any, Any, Any]) -> dict[str, Any]:
    """Input, output, state, config and context JSON schemas; None where a schema holds
    types JSON Schema cannot describe (e.g. a context carrying live clients)."""
    return {
        "input_schema": _schema_or_none(graph, "input", graph.get_input_jsonschema),
        "output_schema": _schema_or_none(graph, "output", graph.get_output_jsonschema),
        "state_schema": _schema_or_none(graph, "state", lambda: _state_jsonschema(graph)),
        "config_schema": _schema_or_none(graph, "config", lambda: _configurable_jsonschema(graph)),
        "context_schema": _schema_or_none(graph, "context", graph.get_context_jsonschema),
    }


def subgraph_schemas(subgraph: object) -> dict[str, Any]:
    """:func:`graph_schemas` of a subgraph ``aget_subgraphs`` found."""
    if isinstance(subgraph, Pregel):
        return graph_schemas(subgraph)
    return dict.fromkeys(_SCHEMAS)  # a remote graph: nothing to introspect here
