"""How the report's numbers are written: one place, so the page and the CLI agree.

top-1 as a percentage with two decimals, counts with thousands separators, latency in
milliseconds with three decimals, and a missing value (``None``) as ``-``.
"""

from __future__ import annotations

import math

from ..errors import UserError

__all__ = ["RUNTIMES", "COLUMNS", "percent", "integer", "millis", "seconds", "cell_value", "shown_columns",
           "text_table"]

MISSING = "-"

# The runtimes a latency row times, in table order: latency_ms key -> the column's heading.
RUNTIMES = {"float": "eager torch fp32", "int8": "ONNX Runtime int8", "openvino_int8": "OpenVINO int8",
            "binary": "torchslim binary kernels"}


def _check(value, what: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"report: {what} must be a number or null, got {value!r}")
    return value


def percent(value, what: str = "top1") -> str:
    """0.91234 -> '91.23%'."""
    value = _check(value, what)
    return MISSING if value is None else f"{value * 100:.2f}%"


def integer(value, what: str = "count") -> str:
    """1234567 -> '1,234,567'."""
    value = _check(value, what)
    return MISSING if value is None else f"{int(round(value)):,}"


def millis(value, what: str = "latency") -> str:
    """1.23456 -> '1.235'."""
    value = _check(value, what)
    return MISSING if value is None else f"{value:.3f}"


def seconds(value, what: str = "seconds") -> str:
    """12.345 -> '12.3'."""
    value = _check(value, what)
    return MISSING if value is None else f"{value:.1f}"


def _latency(kind: str):
    def read(row):
        latency = row.get("latency_ms") or {}
        if not isinstance(latency, dict):
            raise UserError(f"report: latency_ms must be an object such as {{\"float\": 1.2}}, got {latency!r}")
        return latency.get(kind)

    return read


# (data-key, heading, how to read the value from a table row, how to write it)
COLUMNS = [
    ("model", "model", lambda row: row.get("model"), lambda v, what: MISSING if v is None else str(v)),
    ("top1", "top-1", lambda row: row.get("top1"), percent),
    ("params", "params", lambda row: row.get("params"), integer),
    ("macs", "MACs", lambda row: row.get("macs"), integer),
    ("size_bytes", "bytes on disk", lambda row: row.get("size_bytes"), integer),
    ("packed_bytes", "packed bytes", lambda row: row.get("packed_bytes"), integer),
    # latency columns name the runtime that ran the model (batch 1, milliseconds)
    *((f"latency_{key}", title, _latency(key), millis) for key, title in RUNTIMES.items()),
]
LATENCY_FIRST = 6  # COLUMNS[LATENCY_FIRST:] are the latency columns
# shown only when some row has a value (the runtime is an optional extra)
OPTIONAL = {"latency_openvino_int8"}


def cell_value(row: dict, key: str) -> str:
    """The text of column ``key`` for one table row."""
    for name, _, read, write in COLUMNS:
        if name == key:
            return write(read(row), f"{row.get('model', '?')!s} {key}")
    raise KeyError(key)


def shown_columns(rows: list) -> list:
    """The COLUMNS a table of ``rows`` shows: an optional runtime's column only where it was timed."""
    def timed(read):
        return any(read(row) is not None for row in rows)

    return [col for col in COLUMNS if col[0] not in OPTIONAL or timed(col[2])]


def text_table(rows: list, runtimes: dict | None = None) -> str:
    """The results table as aligned plain text for a terminal; each latency column is headed by
    its runtime.  ``runtimes`` ({latency key: "name (version, ISA path)"}) adds one line per
    runtime under the table."""
    columns = [c for c in shown_columns(rows) if c[0] != "packed_bytes" or any(r.get("packed_bytes") for r in rows)]
    cells = [[title for _, title, _, _ in columns]]
    cells += [[cell_value(row, key) for key, *_ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(text.ljust(w) if i == 0 else text.rjust(w) for i, (text, w) in enumerate(zip(line, widths)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("(top-1 on the test split; latency in ms at batch 1, one interleaved run; - = not timed)")
    lines += [f"  {name}" for name in (runtimes or {}).values()]
    return "\n".join(lines)
