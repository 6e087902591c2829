"""Pictures of workflow graphs, drawn on the server as inline SVG: a layered layout of
``graph.get_graph()`` (START on top, END at the bottom), with the path a run took
highlighted and the nodes it waits on marked. No JavaScript and no layout library.

The layout is the classic one for flow charts (Sugiyama): break cycles, give every node
a layer (longest path from the sources), put a waypoint on each layer a long edge
crosses, order each layer by the barycentre of its neighbours to keep crossings few,
then place nodes horizontally as close to their neighbours as their widths allow (an
isotonic regression per layer, solved exactly by pool-adjacent-violators).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from markupsafe import Markup, escape

from agents.approval import SPEC_METADATA_KEY
from agents.nodes import DECISION_METADATA_KEY, REVIEW_METADATA_KEY

START, END = "__start__", "__end__"
Kind = Literal["start", "end", "step", "approval", "decision", "review"]

CHAR_W = 7.6  # width of one character of a node label (12.5px monospace)
NODE_H = 38.0
TERMINAL_H = 26.0
ROW = 78.0  # vertical distance between layers
GAP = 28.0  # least horizontal space between two boxes
DUMMY_W = 14.0
MARGIN = 18.0


@dataclass(frozen=True)
class GraphEdge:
    source: str
    target: str
    conditional: bool = False
    label: str | None = None


@dataclass
class _Box:
    id: str
    kind: Kind | Literal["dummy"]
    w: float
    h: float
    layer: int = 0
    x: float = 0.0
    y: float = 0.0


@dataclass
class Picture:
    """A graph to draw: nodes (id → kind) in declaration order, and edges."""

    nodes: dict[str, Kind]
    edges: list[GraphEdge] = field(default_factory=list)


def picture_of(drawable: Any) -> Picture:
    """A :class:`Picture` of a ``langchain_core`` drawable graph (``graph.get_graph()``)."""
    nodes: dict[str, Kind] = {}
    for node_id, node in drawable.nodes.items():
        meta = node.metadata or {}
        kind: Kind = "step"
        if node_id == START:
            kind = "start"
        elif node_id == END:
            kind = "end"
        elif SPEC_METADATA_KEY in meta:
            kind = "approval"
        elif REVIEW_METADATA_KEY in meta:
            kind = "review"
        elif DECISION_METADATA_KEY in meta:
            kind = "decision"
        nodes[str(node_id)] = kind
    edges = []
    for e in drawable.edges:
        label = str(e.data) if e.data is not None else None
        if label == "__review__":
            label = "review"
        if label is not None and label == e.target:
            label = None  # says nothing the arrow does not
        edges.append(GraphEdge(str(e.source), str(e.target), bool(e.conditional), label))
    return Picture(nodes, edges)


def taken_edges(
    picture: Picture, steps: Sequence[Mapping[str, Any]], waiting: Iterable[str], finished: bool
) -> tuple[set[str], set[tuple[str, str]]]:
    """The nodes a path visited (ran) and the edges it took: an edge is taken when its
    source ran in one step and its target in the next; the nodes waiting now count as the
    step after the last (for the edges into them), START as step 0 when the path begins
    at step 1, END as the step after the last when the run finished."""
    at: dict[int, set[str]] = {}
    for s in steps:
        if isinstance(s.get("step"), int):
            at.setdefault(s["step"], set()).add(s["node"])
    waiting = set(waiting)
    ran = set().union(*at.values()) if at else set()
    last = max(at, default=0)
    if waiting:
        at.setdefault(last + 1, set()).update(waiting)
    if 1 in at:  # the path starts at the graph's start (a resumed run's starts later)
        at[0] = {START}
    if finished and not waiting and at:
        at.setdefault(last + 1, set()).add(END)
    visited: set[str] = set().union(*at.values()) - (waiting - ran) if at else set()
    taken = {
        (e.source, e.target)
        for e in picture.edges
        if any(e.source in nodes and e.target in at.get(s + 1, ()) for s, nodes in at.items())
    }
    return visited, taken


def render(
    picture: Picture,
    *,
    visited: Iterable[str] = (),
    taken: Iterable[tuple[str, str]] = (),
    waiting: Iterable[str] = (),
    here: str | None = None,
    title: str = "workflow graph",
) -> Markup:
    """The graph as an ``<svg>`` element. ``here`` is the node this page is about."""
    boxes, routes = _layout(picture)
    visited, taken, waiting = set(visited), set(taken), set(waiting)
    width = max((b.x + b.w / 2 for b in boxes.values()), default=0) + MARGIN + 40
    height = max((b.y + b.h / 2 for b in boxes.values()), default=0) + MARGIN
    out = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        "<defs>",
        *(
            f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
            f'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto-start-reverse">'
            f'<path class="arrow arrow--{name}" '
            'd="M 0 1 L 9 5 L 0 9 z"/></marker>'
            for name in ("plain", "taken")
        ),
        "</defs>",
    ]
    # Edges first (nodes paint over their ends); taken ones last, so they are on top.
    drawn = sorted(picture.edges, key=lambda e: (e.source, e.target) in taken)
    for edge in drawn:
        points = routes.get((edge.source, edge.target))
        if points is None:
            continue
        is_taken = (edge.source, edge.target) in taken
        classes = ["edge"]
        if edge.conditional:
            classes.append("edge--conditional")
        if is_taken:
            classes.append("edge--taken")
        marker = "taken" if is_taken else "plain"
        out.append(
            f'<g class="{" ".join(classes)}" data-edge="{escape(edge.source)}→{escape(edge.target)}">'
            f'<path d="{_curve(points)}" marker-end="url(#arrow-{marker})"/>'
        )
        if edge.label:
            lx, ly = _label_at(points)
            out.append(
                f'<text class="edge-label" x="{lx:.1f}" y="{ly:.1f}" text-anchor="middle" '
                f'dominant-baseline="central">{escape(edge.label)}</text>'
            )
        out.append("</g>")
    for node_id, kind in picture.nodes.items():
        box = boxes[node_id]
        classes = ["node", f"node--{kind}"]
        if node_id in visited:
            classes.append("node--visited")
        if node_id in waiting:
            classes.append("node--waiting")
        if node_id == here:
            classes.append("node--here")
        state = (
            "waiting here"
            if node_id in waiting
            else "ran"
            if node_id in visited and kind not in ("start", "end")
            else ""
        )
        out.append(f'<g class="{" ".join(classes)}" data-node="{escape(node_id)}">')
        out.append(f"<title>{escape(_label(node_id))} ({kind}{', ' + state if state else ''})</title>")
        x, y = box.x - box.w / 2, box.y - box.h / 2
        if kind in ("start", "end"):
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" '
                f'rx="{box.h / 2:.1f}"/>'
            )
        else:
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" rx="8"/>')
            if kind != "step":
                # A coloured band on the left says what kind of step this is.
                out.append(
                    f'<path class="band" d="M {x + 8:.1f} {y:.1f} a 8 8 0 0 0 -8 8 '
                    f'v {box.h - 16:.1f} a 8 8 0 0 0 8 8 z"/>'
                )
        out.append(
            f'<text x="{box.x:.1f}" y="{box.y:.1f}" text-anchor="middle" dominant-baseline="central">'
            f"{escape(_label(node_id))}</text>"
        )
        if node_id in waiting:
            out.append(
                f'<circle class="pulse" cx="{x + box.w:.1f}" cy="{y:.1f}" r="5"/>'
                f'<circle class="dot" cx="{x + box.w:.1f}" cy="{y:.1f}" r="5"/>'
            )
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))


def _label(node_id: str) -> str:
    return {START: "START", END: "END"}.get(node_id, node_id)


def _size(node_id: str, kind: Kind) -> tuple[float, float]:
    if kind in ("start", "end"):
        return 64.0, TERMINAL_H
    return max(84.0, len(node_id) * CHAR_W + 34), NODE_H


# --- layout -------------------------------------------------------------------------


def _layout(picture: Picture) -> tuple[dict[str, _Box], dict[tuple[str, str], list[tuple[float, float]]]]:
    """Positions of the boxes (centres) and each edge's polyline (ends on box borders)."""
    ids = list(picture.nodes)
    edges = [
        (e.source, e.target)
        for e in picture.edges
        if e.source in picture.nodes and e.target in picture.nodes and e.source != e.target
    ]
    edges = list(dict.fromkeys(edges))
    back = _back_edges(ids, edges)
    dag = [(t, s) if (s, t) in back else (s, t) for s, t in edges]

    layer = _layers(ids, dag)
    if END in layer:
        layer[END] = (
            max(layer.values()) if len(layer) == 1 else max(v for k, v in layer.items() if k != END) + 1
        )
    boxes = {n: _Box(n, picture.nodes[n], *_size(n, picture.nodes[n]), layer=layer[n]) for n in ids}

    # Long edges get a waypoint on every layer they cross.
    chains: dict[tuple[str, str], list[str]] = {}
    links: list[tuple[str, str]] = []
    counter = itertools.count()
    for s, t in dag:
        chain = [s]
        for lay in range(layer[s] + 1, layer[t]):
            dummy = f"\0{next(counter)}"
            boxes[dummy] = _Box(dummy, "dummy", DUMMY_W, 0.0, layer=lay)
            chain.append(dummy)
        chain.append(t)
        links += list(itertools.pairwise(chain))
        chains[(s, t)] = chain

    rows = _order(boxes, links)
    _place(boxes, rows, links)

    routes: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for s, t in edges:
        if (s, t) in back:
            # Drawn up the right-hand side, from the source's side to the target's.
            a, b = boxes[s], boxes[t]
            routes[(s, t)] = [(a.x + a.w / 2, a.y), (b.x + b.w / 2, b.y)]
            continue
        chain = chains[(s, t)]
        points = [(boxes[n].x, boxes[n].y) for n in chain]
        a, b = boxes[chain[0]], boxes[chain[-1]]
        points[0] = (a.x, a.y + a.h / 2)
        points[-1] = (b.x, b.y - b.h / 2)
        routes[(s, t)] = points
    _spread_ports(boxes, routes, back)
    return boxes, routes


def _back_edges(ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Edges that close a cycle, found by a depth-first search from START (then from any
    node not yet seen), in declaration order."""
    succ: dict[str, list[str]] = {n: [] for n in ids}
    for s, t in edges:
        succ[s].append(t)
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    roots = [START] if START in succ else []
    roots += [n for n in ids if n != START]
    for root in roots:
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        while stack:
            node, i = stack.pop()
            if i < len(succ[node]):
                stack.append((node, i + 1))
                nxt = succ[node][i]
                if state.get(nxt) == 1:
                    back.add((node, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[node] = 2
    return back


def _layers(ids: Sequence[str], dag: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Longest path from the sources (Kahn's order over an acyclic edge set)."""
    preds: dict[str, list[str]] = {n: [] for n in ids}
    indegree = dict.fromkeys(ids, 0)
    succ: dict[str, list[str]] = {n: [] for n in ids}
    for s, t in dag:
        preds[t].append(s)
        succ[s].append(t)
        indegree[t] += 1
    ready = [n for n in ids if indegree[n] == 0]
    layer: dict[str, int] = {}
    while ready:
        node = ready.pop(0)
        layer[node] = max((layer[p] + 1 for p in preds[node]), default=0)
        for t in succ[node]:
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    for n in ids:  # unreachable in an acyclic set, but never crash on a picture
        layer.setdefault(n, 0)
    return layer


def _order(boxes: Mapping[str, _Box], links: Sequence[tuple[str, str]]) -> list[list[str]]:
    """Each layer's left-to-right order: barycentre sweeps, keeping the order with the
    fewest crossings."""
    depth = max(b.layer for b in boxes.values()) + 1 if boxes else 0
    rows: list[list[str]] = [[] for _ in range(depth)]
    for node_id, box in boxes.items():  # declaration order, waypoints after
        rows[box.layer].append(node_id)
    up: dict[str, list[str]] = {n: [] for n in boxes}
    down: dict[str, list[str]] = {n: [] for n in boxes}
    for s, t in links:
        down[s].append(t)
        up[t].append(s)
    best, best_crossings = [list(r) for r in rows], _crossings(rows, down)
    for sweep in range(16):
        downward = sweep % 2 == 0
        indices = range(1, depth) if downward else range(depth - 2, -1, -1)
        for i in indices:
            ref = {n: k for k, n in enumerate(rows[i - 1 if downward else i + 1])}
            neighbours = up if downward else down

            def key(
                item: tuple[int, str], ref: dict[str, int] = ref, nb: dict[str, list[str]] = neighbours
            ) -> float:
                k, n = item
                known = [ref[m] for m in nb[n] if m in ref]
                return sum(known) / len(known) if known else float(k)

            rows[i] = [n for _, n in sorted(enumerate(rows[i]), key=key)]
        crossings = _crossings(rows, down)
        if crossings < best_crossings:
            best, best_crossings = [list(r) for r in rows], crossings
    return best


def _crossings(rows: Sequence[Sequence[str]], down: Mapping[str, Sequence[str]]) -> int:
    total = 0
    for upper, lower in itertools.pairwise(rows):
        pos = {n: k for k, n in enumerate(lower)}
        pairs = [(i, pos[t]) for i, s in enumerate(upper) for t in down[s] if t in pos]
        total += sum(
            1 for (a1, b1), (a2, b2) in itertools.combinations(pairs, 2) if (a1 - a2) * (b1 - b2) < 0
        )
    return total


def _place(
    boxes: Mapping[str, _Box], rows: Sequence[Sequence[str]], links: Sequence[tuple[str, str]]
) -> None:
    """x: each node as near its neighbours' mean as the layer's order and widths allow."""
    up: dict[str, list[str]] = {n: [] for n in boxes}
    down: dict[str, list[str]] = {n: [] for n in boxes}
    for s, t in links:
        down[s].append(t)
        up[t].append(s)
    for row in rows:
        x = 0.0
        for n in row:
            boxes[n].x = x + boxes[n].w / 2
            x += boxes[n].w + GAP
    for sweep in range(24):
        downward = sweep % 2 == 0
        order = rows if downward else list(reversed(rows))
        for row in order:
            wanted = []
            for n in row:
                nb = up[n] if downward else down[n]
                if sweep >= 12:
                    nb = up[n] + down[n]
                wanted.append(sum(boxes[m].x for m in nb) / len(nb) if nb else boxes[n].x)
            gaps = [(boxes[a].w + boxes[b].w) / 2 + GAP for a, b in itertools.pairwise(row)]
            for n, x in zip(row, _spaced(wanted, gaps), strict=True):
                boxes[n].x = x
    left = min((b.x - b.w / 2 for b in boxes.values()), default=0.0)
    for b in boxes.values():
        b.x += MARGIN - left
        b.y = MARGIN + NODE_H / 2 + b.layer * ROW


def _spaced(wanted: Sequence[float], gaps: Sequence[float]) -> list[float]:
    """The positions closest (least squares) to ``wanted`` that keep each neighbour at
    least its gap apart, in order: isotonic regression by pool-adjacent-violators."""
    offsets = [0.0, *itertools.accumulate(gaps)]
    targets = [w - o for w, o in zip(wanted, offsets, strict=True)]
    blocks: list[list[float]] = []  # [mean, count]
    for t in targets:
        blocks.append([t, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    solved = [m for m, c in blocks for _ in range(int(c))]
    return [y + o for y, o in zip(solved, offsets, strict=True)]


def _spread_ports(
    boxes: Mapping[str, _Box],
    routes: dict[tuple[str, str], list[tuple[float, float]]],
    back: set[tuple[str, str]],
) -> None:
    """Several edges leaving (or entering) one box start (end) side by side, ordered by
    where they go (come from), instead of all at its centre."""
    outgoing: dict[str, list[tuple[str, str]]] = {}
    incoming: dict[str, list[tuple[str, str]]] = {}
    for key in routes:
        if key in back:
            continue
        outgoing.setdefault(key[0], []).append(key)
        incoming.setdefault(key[1], []).append(key)
    for node, keys in outgoing.items():
        keys.sort(key=lambda k: routes[k][1][0])
        step = min(14.0, boxes[node].w / (len(keys) + 1))
        for i, k in enumerate(keys):
            x, y = routes[k][0]
            routes[k][0] = (x + (i - (len(keys) - 1) / 2) * step, y)
    for node, keys in incoming.items():
        keys.sort(key=lambda k: routes[k][-2][0])
        step = min(14.0, boxes[node].w / (len(keys) + 1))
        for i, k in enumerate(keys):
            x, y = routes[k][-1]
            routes[k][-1] = (x + (i - (len(keys) - 1) / 2) * step, y)


def _curve(points: Sequence[tuple[float, float]]) -> str:
    """A smooth path through the points, vertical at each (S-curves between layers); a
    back edge (two points, side to side) bulges out to the right."""
    (x0, y0), rest = points[0], points[1:]
    d = [f"M {x0:.1f} {y0:.1f}"]
    if len(points) == 2 and points[1][1] < y0:
        x1, y1 = points[1]
        bulge = max(x0, x1) + 36 + (y0 - y1) * 0.15
        d.append(f"C {bulge:.1f} {y0:.1f} {bulge:.1f} {y1:.1f} {x1:.1f} {y1:.1f}")
        return " ".join(d)
    for x1, y1 in rest:
        mid = (y0 + y1) / 2
        d.append(f"C {x0:.1f} {mid:.1f} {x1:.1f} {mid:.1f} {x1:.1f} {y1:.1f}")
        x0, y0 = x1, y1
    return " ".join(d)


def _label_at(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Where an edge's label goes: the middle of its last segment, near its target."""
    (x0, y0), (x1, y1) = points[-2], points[-1]
    return (x0 + x1) / 2, (y0 + y1) / 2
