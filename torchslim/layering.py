"""Which package may import which: the one declaration the layering test reads.

A package imports only from its own layer or the layers before it, and never in a circle.

    errors, config -> data, models, nn, checks -> train, profile, io
      -> techniques (prune, quant, sparse, codebook, lowrank, distill)
      -> export, deploy -> flags -> pipeline, report -> cli

Imports inside functions are kept for optional dependencies (``OPTIONAL_DEPS``) and for
modules loaded late on purpose, each marked ``# lazy: <why>`` on its line: never to hide a cycle.
This module imports nothing, so reading it is free.
"""

LAYERS = (
    ("errors", "config", "layering"),
    ("data", "models", "nn", "checks"),
    ("train", "profile", "io"),
    ("prune", "quant", "sparse", "codebook", "lowrank", "distill"),
    ("export", "deploy"),
    ("flags",),
    ("pipeline", "report"),
    ("cli", "__main__"),
)

# Edges against the order that stay on purpose, each with its reason.  The layering test fails
# when one of them disappears (delete it here) and on any edge or cycle not listed.
EXCEPTIONS: dict = {}

# Third-party packages that torchslim runs without; importing them inside a function is the point.
OPTIONAL_DEPS = frozenset({
    "onnxruntime", "onnx", "torchvision", "timm", "openvino", "nncf", "matplotlib", "sklearn", "scipy",
})

# Names the top-level package serves lazily, and the package each one really lives in.
ROOT_NAMES = {"save": "io", "load": "io", "profile": "profile", "__version__": "config"}


def layer_of(package: str) -> int:
    """Index of ``package``'s layer in :data:`LAYERS` (``KeyError`` for an undeclared one)."""
    for index, names in enumerate(LAYERS):
        if package in names:
            return index
    raise KeyError(package)
