"""torchslim: make a trained PyTorch network smaller and faster, and prove it.

Importing is cheap: the subpackages (``torchslim.models``, ``torchslim.prune``, ...)
load on first attribute access (PEP 562), so ``import torchslim`` pulls in no
data, no models and no native kernels.
"""

import importlib

__version__ = "0.1.0"

__all__ = ["save", "load", "profile", "__version__"]

# Subpackages reachable as attributes of ``torchslim`` without an explicit import.
_SUBPACKAGES = frozenset({
    "cli", "codebook", "data", "deploy", "distill", "export", "flags", "io", "lowrank", "models", "nn",
    "pipeline", "prune", "quant", "report", "sparse", "train",
})


def __getattr__(name):
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'torchslim' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _SUBPACKAGES)


def save(model, path, **meta):
    """Save ``model`` as an architecture spec plus a safetensors state (atomic write)."""
    from .io.serialize import save as _save  # lazy: importing torchslim stays cheap

    return _save(model, path, **meta)


def load(path, map_location="cpu", trust=()):
    """Rebuild a model saved by :func:`save`, in any process.

    ``trust`` names packages whose code may be imported to rebuild a model made from the
    user's own source (``PKG.MODULE:CALLABLE``); nothing else a file names is ever imported.
    """
    from . import export  # noqa: F401  # lazy: registers the packed file format with io
    from .io.serialize import load as _load  # lazy: importing torchslim stays cheap

    return _load(path, map_location=map_location, trust=trust)


def profile(model, input_shape=None, **kwargs):
    """Measure params, MACs and latency of ``model``; see :func:`torchslim.profile.profile_model`.

    ``torchslim.profile`` is also the measurement subpackage: once that is imported
    the attribute is the (callable) subpackage, which behaves the same when called.
    """
    from .profile.report import profile_model  # lazy: importing torchslim stays cheap

    return profile_model(model, input_shape=input_shape, **kwargs)
