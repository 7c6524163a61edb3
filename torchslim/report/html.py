"""One self-contained HTML page from a report dict: inline CSS, figures as data URIs.

The page opens anywhere, offline, as a single file: no scripts, no web fonts, no links to
other files.  Sections whose data is missing or empty are simply left out.
"""

from __future__ import annotations

import base64
from html import escape

from ..errors import UserError
from ..io import atomic_write_text
from .format import LATENCY_FIRST, cell_value, integer, percent, seconds, shown_columns

__all__ = ["build_html", "render_html", "figures"]

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1f2328;
 font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif}
main{max-width:1120px;margin:0 auto;padding:36px 32px 48px}
h1{font-size:28px;margin:0 0 6px;letter-spacing:-0.01em}
h2{font-size:19px;margin:0 0 4px}
.summary{font-size:16px;margin:0 0 6px;color:#30363d}
.meta{font-size:13px;color:#656d76;margin:0 0 26px}
.meta span+span:before{content:"\\00b7";margin:0 8px;color:#afb8c1}
section{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:20px 22px;margin:0 0 22px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:7px 10px;border-bottom:1px solid #e6e9ed;text-align:right;white-space:nowrap}
th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#57606a;font-weight:600;
 border-bottom:2px solid #d0d7de}
th.group{text-align:center;border-bottom:1px solid #d0d7de}
td:first-child,th:first-child{text-align:left}
td:first-child{font-weight:600}
tbody tr:nth-child(even){background:#f8f9fb}
tbody tr:last-child td{border-bottom:none}
.wide{overflow-x:auto}
td.text{text-align:left;white-space:normal;color:#57606a;font-weight:400}
.stages td:nth-child(3),.stages th:nth-child(3),.stages th:nth-child(9){text-align:left}
figure{margin:0}
figure img{display:block;max-width:100%;height:auto;margin:12px auto 8px}
figcaption{font-size:13px;color:#57606a}
ul.runtimes{font-size:13px;color:#57606a;margin:10px 0 0;padding-left:20px}
footer{font-size:12px;color:#8c959f;text-align:center}
"""


def _check(report) -> None:
    if not isinstance(report, dict):
        raise UserError(f"report must be a dict, got {type(report).__name__}")
    if not isinstance(report.get("title"), str) or not report["title"].strip():
        raise UserError("report needs a non-empty 'title'")
    table = report.get("table")
    if not isinstance(table, list) or not all(isinstance(row, dict) for row in table):
        raise UserError("report needs a 'table': a list of rows such as {\"model\": \"original\", \"top1\": 0.91}")
    for key in ("stages", "pruning_rounds", "channels"):
        rows = report.get(key)
        if rows is not None and (not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows)):
            raise UserError(f"report: {key!r} must be a list of objects or null, got {type(rows).__name__}")
    if report.get("runtimes") is not None and not isinstance(report["runtimes"], dict):
        raise UserError("report: 'runtimes' must be an object such as {\"int8\": \"ONNX Runtime int8\"}, or null")
    if report.get("sensitivity") is not None and not isinstance(report["sensitivity"], dict):
        raise UserError("report: 'sensitivity' must be the dict sensitivity_sweep returns, or null")


def _results_table(rows: list, runtimes: dict | None = None) -> str:
    columns = shown_columns(rows)
    latency = len(columns) - LATENCY_FIRST
    head = "".join(f"<th rowspan=2>{escape(title)}</th>" for _, title, _, _ in columns[:LATENCY_FIRST])
    head += f"<th class=group colspan={latency}>latency (ms, batch 1)</th>"
    sub = "".join(f"<th>{escape(title)}</th>" for _, title, _, _ in columns[LATENCY_FIRST:])
    body = []
    for row in rows:
        cells = "".join(f'<td data-key="{key}">{escape(cell_value(row, key))}</td>' for key, *_ in columns)
        body.append(f'<tr data-model="{escape(str(row.get("model", "")))}">{cells}</tr>')
    notes = "".join(f"<li>{escape(str(name))}</li>" for name in (runtimes or {}).values())
    notes = f"<ul class=runtimes>{notes}</ul>" if notes else ""
    return (f'<div class=wide><table id=results><thead><tr>{head}</tr><tr>{sub}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>{notes}')


def _what(stage: dict) -> str:
    """The stage's summary, or else the command it ran."""
    text = stage.get("summary") or stage.get("command") or ""
    return " ".join(map(str, text)) if isinstance(text, (list, tuple)) else str(text)


def _stages_table(stages: list) -> str:
    notes = [_what(stage) for stage in stages]
    heads = ["recipe", "#", "stage", "seconds", "top-1", "params", "MACs", "bytes on disk"]
    heads += ["what it did"] if any(notes) else []
    rows = []
    for stage, note in zip(stages, notes):
        cells = [str(stage.get("recipe", "")), str(stage.get("index", "")), str(stage.get("name", "")),
                 seconds(stage.get("seconds"), "stage seconds"), percent(stage.get("top1"), "stage top1"),
                 integer(stage.get("params"), "stage params"), integer(stage.get("macs"), "stage macs"),
                 integer(stage.get("size_bytes"), "stage size_bytes")]
        tail = f"<td class=text>{escape(note)}</td>" if any(notes) else ""
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + tail + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for h in heads)
    return (f"<section><h2>Stages</h2><div class=wide><table class=stages><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


def figures(report: dict) -> list[tuple[str, str, str, bytes]]:
    """``(key, heading, caption, png)`` for each figure the report has data for."""
    rounds = report.get("pruning_rounds") or []
    stages = report.get("stages") or []
    channels = report.get("channels") or []
    sweep = report.get("sensitivity") or {}
    wanted = [bool(rounds), bool(stages), bool(channels), bool(sweep.get("layers"))]
    if not any(wanted):
        return []
    try:
        from . import plots  # lazy: matplotlib loads only to draw
    except ImportError:
        raise UserError("the report's figures need matplotlib: pip install 'torchslim[report]'") from None
    out = []
    if wanted[0]:
        out.append(("rounds", "Accuracy against MACs over the pruning rounds",
                    "Top-1 after each pruning round, one line per recipe; the numbers mark the round.",
                    plots.rounds_png(rounds)))
    if wanted[1]:
        out.append(("size", "Accuracy against size on disk",
                    "Top-1 against the saved file's bytes (log scale) after each stage; stars mark the "
                    "final models of the table above.", plots.size_png(stages, report.get("table"))))
    if wanted[2]:
        out.append(("channels", "Channels kept per layer",
                    "Channels of each pruned layer before (grey) and after (blue) pruning, in network order.",
                    plots.channels_png(channels)))
    if wanted[3]:
        out.append(("sensitivity", "Per-layer pruning sensitivity",
                    f"Top-1 when one layer alone loses the given share of its channels "
                    f"({sweep.get('criterion', '?')} criterion, no fine-tuning, {sweep.get('images', '?')} "
                    f"test images); the dashed line is the unpruned model.", plots.sensitivity_png(sweep)))
    return out


def _meta_line(report: dict) -> str:
    parts = []
    if report.get("data"):
        parts.append(f"data {report['data']}")
    if report.get("hardware"):
        parts.append(str(report["hardware"]))
    threads = report.get("threads")
    if threads:
        parts.append(f"{threads} thread" + ("" if threads == 1 else "s"))
    if report.get("seconds") is not None:
        parts.append(f"{seconds(report['seconds'])} s in all")
    if report.get("load") is not None:
        parts.append(f"load average {report['load']}")
    return "".join(f"<span>{escape(p)}</span>" for p in parts)


def build_html(report: dict) -> str:
    """The whole page as a string."""
    _check(report)
    title = escape(report["title"])
    parts = [f"<h1>{title}</h1>"]
    if report.get("summary"):
        parts.append(f"<p class=summary>{escape(str(report['summary']))}</p>")
    meta = _meta_line(report)
    parts.append(f"<p class=meta>{meta}</p>")
    results = _results_table(report["table"], report.get("runtimes"))
    parts.append(f"<section><h2>Before and after</h2>{results}</section>")
    for key, heading, caption, png in figures(report):
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<section id="figure-{key}"><figure><h2>{escape(heading)}</h2>'
                     f'<img src="data:image/png;base64,{data}" alt="{escape(heading)}">'
                     f"<figcaption>{escape(caption)}</figcaption></figure></section>")
    if report.get("stages"):
        parts.append(_stages_table(report["stages"]))
    parts.append("<footer>top-1 is measured on the test split; a dash means not measured.</footer>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def render_html(report: dict, path: str) -> str:
    """Write the report page to ``path`` atomically; returns ``path``."""
    page = build_html(report)
    atomic_write_text(path, page)
    return str(path)
