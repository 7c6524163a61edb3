"""The report's figures, each drawn from one section of the report dict into PNG bytes.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, not
with pyplot, so drawing a report changes no global matplotlib state (backend, rcParams,
current figure) of the program that calls it, and works without a display.
"""

from __future__ import annotations

import io
import math

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, PercentFormatter

__all__ = ["rounds_png", "size_png", "channels_png", "sensitivity_png", "palette", "human_bytes"]

_DPI = 110
_GRID = {"color": "#d9dde3", "linewidth": 0.7}
_BEFORE = "#c9ccd1"
_AFTER = "#2f6fb0"


def palette(count: int) -> list:
    """``count`` distinguishable colours: tab10, then tab20, then a continuous map."""
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    cmap = colormaps["viridis"]
    return [cmap(i / max(count - 1, 1) * 0.9) for i in range(count)]


def _figure(width: float = 8.0, height: float = 4.4):
    figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.grid(True, **_GRID)
    axes.set_axisbelow(True)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    return figure, axes


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor="white", metadata={"Software": None})
    return buffer.getvalue()


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def human_bytes(value: float) -> str:
    """1390000 -> '1.4 MB' (decimal units, as file sizes are usually quoted)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def _minor_bytes(value: float, _pos=None) -> str:
    """Label only the 2x and 5x minor ticks, so a narrow log axis still has labels."""
    if value <= 0:
        return ""
    lead = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 6)
    return human_bytes(value) if lead in (2.0, 5.0) else ""


def _by_recipe(rows: list) -> dict:
    grouped: dict = {}
    for row in rows:
        grouped.setdefault(str(row.get("recipe") or "run"), []).append(row)
    return grouped


def rounds_png(rounds: list) -> bytes:
    """Top-1 against MACs (millions) over the pruning rounds, one line per recipe."""
    figure, axes = _figure()
    grouped = _by_recipe([r for r in rounds if _number(r.get("macs")) and _number(r.get("top1"))])
    for colour, (recipe, rows) in zip(palette(len(grouped)), grouped.items()):
        rows = sorted(rows, key=lambda r: (r.get("stage") or 0, r.get("round") or 0))
        xs = [r["macs"] / 1e6 for r in rows]
        ys = [r["top1"] for r in rows]
        axes.plot(xs, ys, marker="o", markersize=5, linewidth=1.6, color=colour, label=recipe)
        for row, x, y in zip(rows, xs, ys):
            axes.annotate(str(row.get("round", "")), (x, y), textcoords="offset points", xytext=(4, 5),
                          fontsize=8, color=colour)
    axes.set_xlabel("MACs (millions)")
    axes.set_ylabel("top-1")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    if grouped:
        axes.legend(frameon=False, fontsize=9)
    return _png(figure)


def size_png(stages: list, table: list | None = None) -> bytes:
    """Top-1 against bytes on disk (log scale): one labelled point per stage, and the
    table's final models as large stars."""
    figure, axes = _figure()
    grouped = _by_recipe([s for s in stages if _number(s.get("size_bytes")) and s["size_bytes"] > 0
                          and _number(s.get("top1"))])
    for colour, (recipe, rows) in zip(palette(len(grouped)), grouped.items()):
        axes.scatter([r["size_bytes"] for r in rows], [r["top1"] for r in rows], s=36, color=colour,
                     label=recipe, zorder=3)
        for row in rows:
            axes.annotate(str(row.get("name", "")), (row["size_bytes"], row["top1"]), textcoords="offset points",
                          xytext=(5, 4), fontsize=8, color=colour)
    finals = [r for r in table or [] if _number(r.get("size_bytes")) and r["size_bytes"] > 0
              and _number(r.get("top1"))]
    if finals:
        axes.scatter([r["size_bytes"] for r in finals], [r["top1"] for r in finals], marker="*", s=190,
                     color="#f2b01e", edgecolors="#333333", linewidths=0.8, label="final models", zorder=4)
        for row in finals:
            axes.annotate(str(row.get("model", "")), (row["size_bytes"], row["top1"]), textcoords="offset points",
                          xytext=(6, -12), fontsize=8, fontweight="bold", color="#333333")
    axes.set_xscale("log")
    axes.margins(x=0.12, y=0.12)  # room for the labels beside the outermost points
    axes.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_bytes(v)))
    axes.xaxis.set_minor_formatter(FuncFormatter(_minor_bytes))
    axes.set_xlabel("bytes on disk (log scale)")
    axes.set_ylabel("top-1")
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    if grouped or finals:
        axes.legend(frameon=False, fontsize=9)
    return _png(figure)


def channels_png(channels: list) -> bytes:
    """Channels per layer before (grey) and after (colour) pruning, in network order."""
    width = min(max(6.0, 0.42 * len(channels) + 2), 16.0)
    figure, axes = _figure(width, 4.4)
    positions = list(range(len(channels)))
    before = [row["before"] if _number(row.get("before")) else 0 for row in channels]
    after = [row["after"] if _number(row.get("after")) else 0 for row in channels]
    axes.bar(positions, before, width=0.8, color=_BEFORE, label="before")
    axes.bar(positions, after, width=0.55, color=_AFTER, label="after")
    axes.set_xticks(positions)
    axes.set_xticklabels([str(row.get("layer", "")) for row in channels], rotation=60, ha="right", fontsize=8)
    axes.set_xlim(-0.6, len(channels) - 0.4)
    axes.set_ylabel("channels")
    axes.grid(False, axis="x")
    axes.legend(frameon=False, fontsize=9)
    return _png(figure)


def sensitivity_png(sensitivity: dict) -> bytes:
    """Top-1 against the share of channels removed, one line per layer pruned alone,
    with the unpruned model's top-1 as a dashed line."""
    layers = sensitivity.get("layers") or []
    baseline = sensitivity.get("baseline_top1")
    start = [0.0] if _number(baseline) else []  # nothing removed: the baseline itself
    ratios = start + [float(r) for r in sensitivity.get("ratios") or []]
    many = len(layers) > 8
    figure, axes = _figure(9.5 if many else 8.0, 4.6)
    styles = ("-", "--", "-.", ":")
    for i, (colour, row) in enumerate(zip(palette(len(layers)), layers)):
        values = [baseline] * len(start) + list(row.get("top1") or [])
        axes.plot(ratios[:len(values)], values, marker="o", markersize=4, linewidth=1.4, color=colour,
                  linestyle=styles[(i // 10) % len(styles)] if many else "-", label=str(row.get("layer", "")))
    if _number(baseline):
        axes.axhline(baseline, color="#555555", linestyle=(0, (5, 4)), linewidth=1.1,
                     label=f"baseline {baseline:.2%}")
    axes.set_xlabel("share of the layer's channels removed")
    axes.set_ylabel("top-1")
    axes.set_xlim(-0.02, 1.0)
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    if many:
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7,
                    ncols=1 if len(layers) <= 24 else 2)
    else:
        axes.legend(frameon=False, fontsize=8, loc="lower left")
    return _png(figure)
