"""Shared by the benchmark scripts: hardware description and BENCHMARKS.md sections.

Each script owns one section of BENCHMARKS.md, delimited by HTML comments, and
rewrites only that section (atomically), so scripts can run in any order.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")
sys.path.insert(0, ROOT)

from torchslim.io import atomic_write_text  # noqa: E402
from torchslim.profile.hardware import OtherLoad, hardware  # noqa: E402,F401 - the scripts' hardware line and load


def command_line() -> str:
    return "python " + " ".join([os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def _title(body: str) -> str | None:
    match = re.search(r"^## (.+)$", body, re.M)
    return match.group(1).strip() if match else None


def _anchor(name: str) -> str:
    # Outside the markers, so a re-render keeps it; the blank line ends the HTML block before the comment.
    return f'<a id="{name}"></a>\n\n'


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of BENCHMARKS.md with ``body``.

    A section is found by its markers.  Failing that, a section with the same ``## `` title is
    replaced (and renamed): one claim, one section, from its latest run.  A deliberate variant
    gives itself a title of its own.  A new section is appended with an anchor named after it,
    which README and the documentation link to.
    """
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = open(BENCHMARKS_MD).read() if os.path.exists(BENCHMARKS_MD) else "# Benchmarks\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        same = _section_titled(text, _title(body))
        if same is not None:
            old_name, span = same
            text = text[:span[0]] + block + text[span[1]:]
            text = text.replace(_anchor(old_name), _anchor(name))
        else:
            text = text.rstrip() + "\n\n" + _anchor(name) + block + "\n"
    atomic_write_text(BENCHMARKS_MD, text)


def sections(text: str) -> list[tuple[str, str, tuple[int, int]]]:
    """``(name, title, span of the block)`` of every marked section of a BENCHMARKS.md text."""
    found = []
    for match in re.finditer(r"<!-- BEGIN (\S+) -->\n(.*?)<!-- END \1 -->", text, re.S):
        found.append((match.group(1), _title(match.group(2)), match.span()))
    return found


def _section_titled(text: str, title: str | None):
    for name, other, span in sections(text):
        if title is not None and other == title:
            return name, span
    return None


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


_PROBE_C = r"""
#include <stdint.h>
#include <time.h>
double probe(long n) {
    struct timespec a, b;
    uint64_t x = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
#if defined(__x86_64__)
        __asm__ volatile("add $1, %0" : "+r"(x));
#else
        __asm__ volatile("" : "+r"(x));
        x++;
#endif
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    return n / ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec));
}
"""


@functools.lru_cache(maxsize=1)
def _probe_library():
    from torchslim.deploy import build

    compiler = build._compiler()
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory(prefix="torchslim-probe-") as folder:  # a loaded library outlives its file
        source, target = os.path.join(folder, "probe.c"), os.path.join(folder, "probe.so")
        with open(source, "w") as handle:
            handle.write(_PROBE_C)
        subprocess.run([compiler, "-O1", "-shared", "-fPIC", source, "-o", target], check=True, capture_output=True)
        lib = ctypes.CDLL(target)
    lib.probe.argtypes, lib.probe.restype = [ctypes.c_long], ctypes.c_double
    return lib


def core_clock_ghz(iterations: int = 100_000_000) -> float | None:
    """Iterations per ns of a dependent chain of 1-cycle adds: the clock this core runs at as a guest sees
    it, lower when the host clocks down or another guest's thread shares the physical core (which slows
    integer code like the popcount kernels more than float code).  Median of 3; None without a compiler."""
    lib = _probe_library()
    if lib is None:
        return None
    return sorted(lib.probe(iterations) for _ in range(3))[1]
