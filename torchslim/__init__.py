"""torchslim: make a trained PyTorch network smaller and faster, and prove it.

Importing is cheap: the heavy parts (data, models, kernels) load on first use.
"""

__version__ = "0.1.0"

__all__ = ["save", "load", "profile", "__version__"]


def save(model, path, **meta):
    """Save ``model`` as an architecture spec plus a safetensors state (atomic write)."""
    from .io.serialize import save as _save

    return _save(model, path, **meta)


def load(path, map_location="cpu", trust=()):
    """Rebuild a model saved by :func:`save`, in any process.

    ``trust`` names packages whose code may be imported to rebuild a model made from the
    user's own source (``PKG.MODULE:CALLABLE``); nothing else a file names is ever imported.
    """
    from .io.serialize import load as _load

    return _load(path, map_location=map_location, trust=trust)


def profile(model, input_shape=None, **kwargs):
    """Measure params, MACs and latency of ``model``; see :func:`torchslim.profile.profile_model`."""
    from .profile.report import profile_model

    return profile_model(model, input_shape=input_shape, **kwargs)
