"""A visual report: one self-contained HTML page from a report dict.

    from torchslim.report import render_html
    render_html({"title": "vgg14 pruned", "table": [{"model": "original", "top1": 0.92, ...}]},
                "report.html")

The dict is the one a pipeline run writes as ``report.json``: ``title`` and ``table``
are required; ``summary``, ``stages``, ``pruning_rounds``, ``channels`` and
``sensitivity`` (from :func:`torchslim.prune.sensitivity_sweep`), ``runtimes`` ({latency key: the
runtime's name, version and ISA path}) and ``load`` are optional, and the
page leaves out whatever is missing.  :mod:`~torchslim.report.plots` draws each figure
as PNG bytes (matplotlib, without pyplot).
"""

from .html import build_html, figures, render_html

__all__ = ["build_html", "figures", "render_html"]
