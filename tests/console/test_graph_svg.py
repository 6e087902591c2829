"""The server-side picture of a graph: layers, no overlapping boxes, the path a run took,
cycles, and well-formed SVG."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from api.console import graph_svg
from api.console.graph_svg import GAP, GraphEdge, Picture
from graphs.registry import GraphRegistry
from tests.api.approval_graphs import contract_graph, reviewed_graph

SVG = "{http://www.w3.org/2000/svg}"


def _no_overlaps(picture: Picture) -> dict[str, graph_svg._Box]:
    boxes, routes = graph_svg._layout(picture)
    real = [b for b in boxes.values() if b.kind != "dummy"]
    for a, b in itertools.combinations(real, 2):
        if a.layer == b.layer:
            assert abs(a.x - b.x) >= (a.w + b.w) / 2 + GAP - 0.01, (a.id, b.id)
        else:
            assert a.y != b.y
    for e in picture.edges:
        assert (e.source, e.target) in routes
    return {b.id: b for b in real}


def test_parallel_branches_share_a_layer_between_start_and_end() -> None:
    picture = graph_svg.picture_of(contract_graph.compile().get_graph())
    assert picture.nodes == {
        "__start__": "start",
        "legal": "approval",
        "finance": "approval",
        "join": "step",
        "__end__": "end",
    }
    boxes = _no_overlaps(picture)
    assert [boxes[n].layer for n in ("__start__", "legal", "finance", "join", "__end__")] == [0, 1, 1, 2, 3]
    assert boxes["legal"].y == boxes["finance"].y < boxes["join"].y


def test_the_built_in_graph_is_drawn_without_overlaps_and_marks_its_path() -> None:
    entry = GraphRegistry.load().get("support_triage")
    picture = graph_svg.picture_of(entry.builder.compile().get_graph())
    assert picture.nodes["triage"] == "decision" and picture.nodes["approval"] == "approval"
    boxes = _no_overlaps(picture)
    assert boxes["__end__"].layer == max(b.layer for b in boxes.values())
    assert {b.id for b in boxes.values() if b.layer == boxes["__end__"].layer} == {"__end__"}

    steps = [
        {"node": "load_customer", "step": 1},
        {"node": "triage", "step": 2},
        {"node": "handoff", "step": 3},
        {"node": "respond", "step": 4},
    ]
    visited, taken = graph_svg.taken_edges(picture, steps, [], finished=True)
    assert visited == {"__start__", "load_customer", "triage", "handoff", "respond", "__end__"}
    assert taken == {
        ("__start__", "load_customer"),
        ("load_customer", "triage"),
        ("triage", "handoff"),
        ("handoff", "respond"),
        ("respond", "__end__"),
    }
    svg = graph_svg.render(picture, visited=visited, taken=taken, title="support_triage")
    root = ET.fromstring(str(svg))  # well-formed
    edges = root.findall(f"{SVG}g")
    dashed = [g for g in edges if "edge--conditional" in g.get("class", "")]
    assert len(dashed) == sum(e.conditional for e in picture.edges)
    labels = {t.text for g in dashed for t in g.findall(f"{SVG}text")}
    assert {"refund", "answer", "technical", "escalate"} <= labels
    assert sum("edge--taken" in g.get("class", "") for g in edges) == 5


def test_a_paused_run_marks_the_waiting_nodes_and_the_edges_into_them() -> None:
    picture = graph_svg.picture_of(reviewed_graph.compile().get_graph())
    assert picture.nodes["route_it"] == "decision" and picture.nodes["route_it_review"] == "review"
    visited, taken = graph_svg.taken_edges(
        picture, [{"node": "route_it", "step": 1}], ["route_it_review"], finished=False
    )
    assert visited == {"__start__", "route_it"}
    assert taken == {("__start__", "route_it"), ("route_it", "route_it_review")}
    svg = str(
        graph_svg.render(
            picture, visited=visited, taken=taken, waiting=["route_it_review"], here="route_it_review"
        )
    )
    assert 'class="node node--review node--waiting node--here" data-node="route_it_review"' in svg
    assert 'class="node node--end" data-node="__end__"' in svg
    # A resumed run's path begins later: START is not part of it.
    visited, taken = graph_svg.taken_edges(
        picture,
        [{"node": "route_it_review", "step": 2}, {"node": "answer_desk", "step": 3}],
        [],
        finished=True,
    )
    assert "__start__" not in visited and ("answer_desk", "__end__") in taken


class _S(TypedDict, total=False):
    n: int


def test_cycles_and_odd_names_are_drawn() -> None:
    builder = StateGraph(_S)
    builder.add_node("a&b", lambda s: {"n": s.get("n", 0) + 1})
    builder.add_node("check", lambda s: {})
    builder.add_edge(START, "a&b")
    builder.add_edge("a&b", "check")
    builder.add_conditional_edges(
        "check", lambda s: "again" if s["n"] < 3 else "done", {"again": "a&b", "done": END}
    )
    picture = graph_svg.picture_of(builder.compile().get_graph())
    boxes = _no_overlaps(picture)
    assert boxes["a&b"].layer < boxes["check"].layer < boxes["__end__"].layer
    svg = str(graph_svg.render(picture))
    ET.fromstring(svg)
    assert 'data-node="a&amp;b"' in svg


def test_spacing_keeps_order_and_gaps_as_close_to_the_wish_as_possible() -> None:
    assert graph_svg._spaced([0.0, 0.0, 0.0], [10.0, 10.0]) == [-10.0, 0.0, 10.0]
    assert graph_svg._spaced([0.0, 50.0], [10.0]) == [0.0, 50.0]
    assert graph_svg._spaced([5.0, 0.0], [10.0]) == [-2.5, 7.5]


def test_an_empty_picture_is_still_an_svg() -> None:
    ET.fromstring(str(graph_svg.render(Picture(nodes={}, edges=[]))))
    lone = Picture(nodes={"x": "step"}, edges=[GraphEdge("x", "missing")])
    ET.fromstring(str(graph_svg.render(lone)))
