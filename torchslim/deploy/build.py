"""Build the native kernels with the machine's C compiler, once, and load them with ctypes.

The library is plain C over raw buffers (no torch headers), compiled on first use
into a per-user cache keyed by the source and compiler, written atomically so
concurrent processes never load a half-written file.  Without a compiler the
callers fall back to the pure-PyTorch reference path, with one warning.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "bitkernels.c")
FLAGS = ["-O3", "-fPIC", "-shared", "-pthread", "-ffp-contract=off", "-fno-fast-math"]


def cache_dir() -> str:
    base = os.environ.get("TORCHSLIM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torchslim")
    return os.path.join(base, "kernels")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compile(compiler: str, target: str, source: str = SOURCE) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(target))
    os.close(fd)
    try:
        subprocess.run([compiler, *FLAGS, source, "-o", tmp], check=True, capture_output=True, text=True)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    i64, ptr, f_ptr = ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p
    lib.bk_pack_signs.argtypes = [f_ptr, i64, i64, i64, i64, i64, ptr, ctypes.c_int]
    lib.bk_pack.argtypes = [f_ptr, i64, i64, i64, i64, i64, f_ptr, i64, ctypes.c_int, ctypes.c_int, ptr, ctypes.c_int]
    lib.bk_pack_weights.argtypes = [ptr, i64, i64, i64, i64, i64, ptr]
    lib.bk_conv.argtypes = [ptr]
    lib.bk_conv.restype = i64
    lib.bk_conv_chain.argtypes = [ptr, i64]
    lib.bk_conv_chain.restype = i64
    lib.bk_conv_desc_size.restype = i64
    lib.bk_int_thresholds.argtypes = [ptr, ptr]
    lib.bk_int_thresholds.restype = i64
    lib.bk_select_isa.argtypes = [ctypes.c_int]
    lib.bk_select_isa.restype = ctypes.c_int
    lib.bk_isa.restype = ctypes.c_int
    lib.bk_max_threads.restype = ctypes.c_int
    lib.bk_pq_linear.argtypes = [f_ptr, i64, i64, i64, i64, f_ptr, ptr, i64, f_ptr, f_ptr, f_ptr, ctypes.c_int]
    lib.bk_pq_linear.restype = None
    lib.bk_pq_conv.argtypes = [f_ptr, i64, i64, i64, i64, i64, i64, f_ptr, ptr, i64, i64, i64, i64, i64, f_ptr,
                               f_ptr, ctypes.c_int]
    lib.bk_pq_conv.restype = i64
    lib.bk_pool_wake.argtypes = [ctypes.c_int]
    lib.bk_pool_wake.restype = None
    for name in ("bk_pack_signs", "bk_pack", "bk_pack_weights"):
        getattr(lib, name).restype = None
    lib.bk_select_isa(_requested_isa())
    return lib


# The native paths, by the number bk_select_isa takes; the best the CPU supports runs by default.
ISA_NAMES = ("portable", "popcnt+avx2+bmi", "avx512-vpopcntdq")
_ISA_ALIASES = {"portable": 0, "avx2": 1, "avx512": 2, **{name: i for i, name in enumerate(ISA_NAMES)}}


def _requested_isa() -> int:
    """TORCHSLIM_ISA: auto (default), portable, avx2 or avx512 (the best below it the CPU has)."""
    return _ISA_ALIASES.get(os.environ.get("TORCHSLIM_ISA", "auto"), -1)


@functools.lru_cache(maxsize=1)
def native_library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (with one warning) when they cannot be built."""
    if os.environ.get("TORCHSLIM_NATIVE", "1") == "0":
        return None
    compiler = _compiler()
    if compiler is None:
        warnings.warn("torchslim: no C compiler found; binary layers use the slower PyTorch reference path",
                      RuntimeWarning, stacklevel=2)
        return None
    digest = hashlib.sha256(" ".join([compiler, *FLAGS]).encode())
    folder = os.path.dirname(SOURCE)
    for name in sorted(os.listdir(folder)):  # the headers it includes change the library too
        if name.endswith((".c", ".h")):
            with open(os.path.join(folder, name), "rb") as handle:
                digest.update(name.encode() + handle.read())
    digest = digest.hexdigest()[:16]
    target = os.path.join(cache_dir(), f"bitkernels-{digest}.so")
    try:
        if not os.path.exists(target):
            _compile(compiler, target)
        return _declare(ctypes.CDLL(target))
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        warnings.warn(f"torchslim: building the binary kernels failed ({detail.strip().splitlines()[-1:]}); "
                      "using the PyTorch reference path", RuntimeWarning, stacklevel=2)
        return None


def isa() -> str:
    """Which inner loops run: 'avx512-vpopcntdq', 'popcnt+avx2+bmi', 'portable', or 'reference'
    (no native library)."""
    lib = native_library()
    if lib is None:
        return "reference"
    return ISA_NAMES[lib.bk_isa()]


def available_isas() -> list[str]:
    """Every native path this CPU can run, portable first (empty without the native library)."""
    lib = native_library()
    if lib is None:
        return []
    current = lib.bk_isa()
    try:
        return [name for i, name in enumerate(ISA_NAMES) if lib.bk_select_isa(i) == i]
    finally:
        lib.bk_select_isa(current)


@contextlib.contextmanager
def use_isa(name: str):
    """Run the native kernels on path ``name`` (one of :func:`available_isas`) inside the block."""
    lib = native_library()
    if lib is None or name not in available_isas():
        raise ValueError(f"ISA path {name!r} is not available here; available: {available_isas()}")
    current = lib.bk_isa()
    lib.bk_select_isa(ISA_NAMES.index(name))
    try:
        yield name
    finally:
        lib.bk_select_isa(current)
