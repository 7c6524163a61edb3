"""How the report's numbers are written: one place, so the page and the CLI agree.

top-1 as a percentage with two decimals, counts with thousands separators, latency in
milliseconds with three decimals, and a missing value (``None``) as ``-``.
"""

from __future__ import annotations

import math

from ..errors import UserError

__all__ = ["COLUMNS", "percent", "integer", "millis", "seconds", "cell_value"]

MISSING = "-"


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
    ("latency_float", "float", _latency("float"), millis),
    ("latency_int8", "int8", _latency("int8"), millis),
    ("latency_binary", "binary", _latency("binary"), millis),
]


def cell_value(row: dict, key: str) -> str:
    """The text of column ``key`` for one table row."""
    for name, _, read, write in COLUMNS:
        if name == key:
            return write(read(row), f"{row.get('model', '?')!s} {key}")
    raise KeyError(key)
