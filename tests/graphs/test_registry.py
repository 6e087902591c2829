"""The graph registry: built-in graphs plus the user's, from a langgraph.json-style file."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from core.errors import ConfigurationError, NotFound
from core.settings import Settings
from graphs.registry import BUILTIN_GRAPHS, GraphRegistry
from runs.engine import open_engine
from runs.payload import RunPayload

USER_GRAPH = '''
"""Echo graph: START -> shout -> END."""
from typing_extensions import TypedDict
from langgraph.graph import StateGraph, START, END

class S(TypedDict, total=False):
    text: str
    loud: str

def shout(state: S) -> S:
    return {"loud": state["text"].upper() + "!"}

def build():
    b = StateGraph(S)
    b.add_node("shout", shout)
    b.add_edge(START, "shout")
    b.add_edge("shout", END)
    return b

builder = build()
compiled = build().compile(interrupt_before=["shout"])
not_a_graph = 42
'''


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    (tmp_path / "graphs").mkdir()
    (tmp_path / "graphs" / "echo.py").write_text(USER_GRAPH)
    config = tmp_path / "langgraph.json"
    config.write_text(
        json.dumps(
            {
                "graphs": {
                    "echo": "./graphs/echo.py:builder",
                    "echo_factory": "./graphs/echo.py:build",
                    "echo_compiled": "./graphs/echo.py:compiled",
                }
            }
        )
    )
    return config


def test_builtin_graphs_are_registered() -> None:
    registry = GraphRegistry.load()
    assert "support_triage" in registry.ids()
    description = registry.get("support_triage").description
    assert description is not None and "support ticket" in description
    assert {"order_fulfillment", "reconcile_payments"} <= set(registry.ids())
    with pytest.raises(NotFound, match="nope"):
        registry.get("nope")


def test_user_graphs_load_in_every_form(config_file: Path) -> None:
    registry = GraphRegistry.load(config_file)
    assert set(registry.ids()) == set(BUILTIN_GRAPHS) | {"echo", "echo_factory", "echo_compiled"}
    assert registry.get("echo").description == "Echo graph: START -> shout -> END."
    assert registry.get("echo_compiled").compile_kwargs == {"interrupt_before": ["shout"]}


@pytest.mark.parametrize(
    ("graphs", "message"),
    [
        ({"x": "./missing.py:g"}, "does not exist"),
        ({"x": "no_colon_here"}, "must look like"),
        ({"x": "./graphs/echo.py:nope"}, "has no attribute 'nope'"),
        ({"x": "./graphs/echo.py:not_a_graph"}, "not a StateGraph"),
    ],
)
def test_bad_config_is_explained(config_file: Path, graphs: dict[str, str], message: str) -> None:
    config_file.write_text(json.dumps({"graphs": graphs}))
    with pytest.raises(ConfigurationError, match=message):
        GraphRegistry.load(config_file)


def test_config_that_is_not_json_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "langgraph.json"
    bad.write_text("graphs: yes")
    with pytest.raises(ConfigurationError, match="must be JSON"):
        GraphRegistry.load(bad)
    with pytest.raises(ConfigurationError, match="does not exist"):
        GraphRegistry.load(tmp_path / "missing.json")


async def test_user_graph_runs_in_the_engine(
    redis_url: str, key_prefix: str, config_file: Path, tmp_path: Path
) -> None:
    settings = Settings(
        redis_url=redis_url, key_prefix=key_prefix, config=config_file, data_dir=tmp_path, local_llm=False
    )
    async with open_engine(settings) as engine:
        tid, run_id = str(uuid.uuid4()), str(uuid.uuid4())
        payload = RunPayload(graph_id="echo", assistant_id="echo", input={"text": "hi"})
        await engine.store.create_run(
            run_id=run_id, thread_id=tid, graph_id="echo", assistant_id="echo", metadata={},
            payload=payload.model_dump(mode="json"), strategy="enqueue", if_not_exists="create", is_resume=False,
        )  # fmt: skip
        end = await engine.store.wait_for_end(tid, run_id)
        assert end is not None
        assert end["values"] == {"text": "hi", "loud": "HI!"}
