"""Reports of an eval run: a plain-text summary for the terminal and a self-contained HTML page.

The HTML page has no scripts and loads nothing: styles are inline, the confusion matrix
is a heat-map table, the accuracy-vs-coverage curve and the latency histogram are inline
SVG drawn by :mod:`evals.svg`.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

from evals.datasets import Case
from evals.models import EvalRun, Metrics
from evals.svg import Marker, histogram, histogram_bins, line_plot

__all__ = ["render_html", "summary_text"]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


def _confidence_line(m: Metrics) -> str:
    if not m.confidence_available:
        return "not reported by the server (no log-probabilities)"
    best = m.best_threshold
    if best is None:
        return f"no threshold keeps >= {m.min_coverage:.0%} of cases"
    return (
        f"best threshold >= {m.min_coverage:.0%} coverage: {best.threshold:.3f} keeps "
        f"{best.coverage:.1%} ({best.kept}) at accuracy {_pct(best.accuracy)}"
    )


def summary_text(run: EvalRun) -> str:
    """The summary printed to stdout after a run."""
    m = run.metrics
    served = ", ".join(run.served_models) or "none answered"
    part = f" (first {run.limit} of {run.total_cases_in_split})" if run.limit is not None else ""
    lines = [
        f"{run.node}  split {run.split}{part}  dataset {run.dataset_version}  prompt {run.prompt_version}",
        f"model {run.model} (served: {served}) at {run.base_url}  {run.started_at}",
        "",
        f"  accuracy     {_pct(m.accuracy)}  ({m.correct}/{m.cases})",
        f"  fallbacks    {m.fallbacks}  ({_pct(m.fallback_rate)}); cases with failed attempts: {m.cases_with_errors}",
        f"  latency      p50 {_ms(m.latency_p50_ms)}  p95 {_ms(m.latency_p95_ms)}  max {_ms(m.latency_max_ms)}",
        f"  confidence   {_confidence_line(m)}",
        f"  tokens       {m.prompt_tokens} prompt, {m.completion_tokens} completion; {run.duration_s:.1f} s",
        "",
    ]
    width = max(len(label) for label in m.labels) if m.labels else 6
    lines.append(f"  {'branch':<{width}}  precision  recall  support  predicted")
    for label, s in m.per_branch.items():
        lines.append(
            f"  {label:<{width}}  {_num(s.precision):>9}  {_num(s.recall):>6}  {s.support:>7}  {s.predicted:>9}"
        )
    lines += ["", "  confusion (rows: expected, columns: chosen)"]
    cols = [max(len(label), 4) for label in m.labels]
    lines.append(
        "  " + " " * width + "".join(f"  {label:>{w}}" for label, w in zip(m.labels, cols, strict=True))
    )
    for label, row in zip(m.labels, m.confusion, strict=True):
        cells = "".join(f"  {count:>{w}}" for count, w in zip(row, cols, strict=True))
        lines.append(f"  {label:<{width}}{cells}")
    return "\n".join(lines)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #111; padding: 0 1rem; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: right; vertical-align: top; }
th { background: #f5f5f5; } td.text, th.text { text-align: left; }
table.meta td, table.meta th { text-align: left; }
.pass { color: #15803d; font-weight: bold; } .fail { color: #b91c1c; font-weight: bold; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; }
.small { color: #555; font-size: .9rem; }
""".strip()


def _meta_table(run: EvalRun) -> str:
    rows = [
        ("node", run.node),
        ("model", f"{run.model} (served: {', '.join(run.served_models) or 'none answered'})"),
        ("base URL", run.base_url),
        ("dataset version", f"{run.dataset_version} (sha256 {run.dataset_sha256[:12]})"),
        ("split", run.split + (f", first {run.limit} of {run.total_cases_in_split}" if run.limit else "")),
        ("prompt_version", run.prompt_version),
        ("date", run.started_at),
        (
            "settings",
            f"{run.structured_output}, logprobs {'on' if run.logprobs else 'off'}, "
            f"{run.max_attempts} attempts × {run.timeout_s:g} s, concurrency {run.concurrency}",
        ),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _summary_table(run: EvalRun) -> str:
    m = run.metrics
    gate = run.gate
    status = (
        "—"
        if gate is None
        else ('<span class="pass">PASS</span>' if gate.passed else '<span class="fail">FAIL</span>')
    )
    rows = [
        ("accuracy", escape(f"{_pct(m.accuracy)} ({m.correct}/{m.cases})")),
        ("fallbacks", escape(f"{m.fallbacks} ({_pct(m.fallback_rate)})")),
        ("cases with failed attempts", str(m.cases_with_errors)),
        ("latency p50 / p95", escape(f"{_ms(m.latency_p50_ms)} / {_ms(m.latency_p95_ms)}")),
        ("confidence", escape(_confidence_line(m))),
        ("tokens (prompt / completion)", f"{m.prompt_tokens} / {m.completion_tokens}"),
        ("duration", f"{run.duration_s:.1f} s"),
        ("gate", status),
    ]
    if gate is not None:
        rows += [("", escape(r)) for r in gate.reasons]
        rows += [("", f'<span class="small">{escape(n)}</span>') for n in gate.notes]
    body = "".join(f'<tr><th class="text">{escape(k)}</th><td class="text">{v}</td></tr>' for k, v in rows)
    return f'<table class="meta" id="summary">{body}</table>'


def _branch_table(m: Metrics) -> str:
    head = "<tr><th class='text'>branch</th><th>precision</th><th>recall</th><th>support</th><th>predicted</th></tr>"
    rows = "".join(
        f"<tr><td class='text'>{escape(label)}</td><td>{_num(s.precision)}</td><td>{_num(s.recall)}</td>"
        f"<td>{s.support}</td><td>{s.predicted}</td></tr>"
        for label, s in m.per_branch.items()
    )
    return f'<table id="per-branch">{head}{rows}</table>'


def _confusion_table(m: Metrics) -> str:
    """Heat map: each cell shaded by its share of the row (green on the diagonal, red off it)."""
    head = "<tr><th class='text'>expected ↓ / chosen →</th>" + "".join(
        f"<th>{escape(label)}</th>" for label in m.labels
    )
    head += "<th>total</th></tr>"
    rows = []
    for i, (label, row) in enumerate(zip(m.labels, m.confusion, strict=True)):
        total = sum(row)
        cells = []
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            rgb = "22, 163, 74" if i == j else "220, 38, 38"
            alpha = 0.08 + 0.72 * share if count else 0.0
            tip = f"{count} of {total} '{label}' cases went to '{m.labels[j]}'"
            cells.append(
                f'<td style="background: rgba({rgb}, {alpha:.2f})" title="{escape(tip)}">{count}</td>'
            )
        rows.append(f"<tr><th class='text'>{escape(label)}</th>{''.join(cells)}<td>{total}</td></tr>")
    return f'<table id="confusion-matrix">{head}{"".join(rows)}</table>'


def _coverage_plot(m: Metrics) -> str:
    points = [
        (
            p.coverage,
            p.accuracy if p.accuracy is not None else 0.0,
            f"threshold {'none' if p.threshold is None else f'{p.threshold:.3f}'}: "
            f"coverage {p.coverage:.1%} ({p.kept}), accuracy {_pct(p.accuracy)}",
        )
        for p in m.coverage_curve
    ]
    best = m.best_threshold
    highlight = (best.coverage, best.accuracy) if best is not None and best.accuracy is not None else None
    return line_plot(
        "coverage-curve",
        points,
        title="Accuracy vs coverage (cases kept when answering only above a confidence threshold)",
        x_label="coverage (fraction of cases kept)",
        y_label="accuracy on kept cases",
        markers=[Marker(m.min_coverage, f"{m.min_coverage:.0%} coverage")],
        highlight=highlight,
    )


def _latency_plot(run: EvalRun) -> str:
    m = run.metrics
    latencies = [r.latency_ms for r in run.cases]
    markers = []
    if m.latency_p50_ms is not None:
        markers.append(Marker(m.latency_p50_ms, "p50", "#15803d"))
    if m.latency_p95_ms is not None:
        markers.append(Marker(m.latency_p95_ms, "p95", "#b91c1c"))
    return histogram(
        "latency-histogram",
        histogram_bins(latencies),
        title="Decision latency (all attempts of a case)",
        x_label="latency per decision (ms)",
        markers=markers,
    )


def _misroutes(run: EvalRun, cases: Mapping[str, Case]) -> str:
    wrong = [r for r in run.cases if not r.correct]
    if not wrong:
        return "<p>None.</p>"
    head = (
        "<tr><th class='text'>id</th><th class='text'>expected</th><th class='text'>chosen</th>"
        "<th class='text'>method</th><th>confidence</th><th class='text'>ticket</th>"
        "<th class='text'>notes / errors</th></tr>"
    )
    rows = []
    for r in wrong:
        case = cases.get(r.id)
        text = " ".join(f"{k}: {v}" for k, v in case.input.items()) if case else ""
        if len(text) > 400:
            text = text[:400] + "…"
        extra = "; ".join(filter(None, [case.notes if case else None, ", ".join(r.errors)]))
        rows.append(
            f"<tr><td class='text'>{escape(r.id)}</td><td class='text'>{escape(r.expected)}</td>"
            f"<td class='text'>{escape(r.chosen)}</td><td class='text'>{escape(r.method)}</td>"
            f"<td>{_num(r.confidence)}</td><td class='text'>{escape(text)}</td>"
            f"<td class='text'>{escape(extra)}</td></tr>"
        )
    return f'<table id="misroutes">{head}{"".join(rows)}</table>'


def render_html(run: EvalRun, cases: Mapping[str, Case]) -> str:
    """The self-contained HTML report of ``run``; ``cases`` supplies ticket texts for misroutes."""
    m = run.metrics
    no_confidence = (
        ""
        if m.confidence_available
        else "<p class='small'>The server reported no log-probabilities: every case is kept at full coverage.</p>"
    )
    title = f"Eval {run.node} · {run.split} · {run.started_at}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>
{_STYLE}
</style>
</head>
<body>
<h1>{escape(title)}</h1>
{_meta_table(run)}
<h2>Summary</h2>
{_summary_table(run)}
<h2>Per branch</h2>
{_branch_table(m)}
<h2>Confusion matrix</h2>
<p class="small">Rows: the expected branch; columns: the branch chosen. Shade: share of the row.</p>
{_confusion_table(m)}
<h2>Plots</h2>
<div class="charts">
<figure>{_coverage_plot(m)}<figcaption class="small">Accuracy vs coverage; red ring: best
threshold keeping &ge; {m.min_coverage:.0%} of cases.</figcaption></figure>
<figure>{_latency_plot(run)}<figcaption class="small">Latency histogram with p50 and p95.</figcaption></figure>
</div>
{no_confidence}
<h2>Misrouted cases ({m.cases - m.correct})</h2>
{_misroutes(run, cases)}
</body>
</html>
"""
