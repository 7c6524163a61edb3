"""torchvision and timm models for the coverage tests.

PyPI's torchvision wheel links its compiled ops against the CUDA build of torch; with the
CPU build ``import torchvision`` fails with "operator torchvision::nms does not exist".
The classification models are pure Python, so declaring the two schemas it looks up lets
it load.
"""

from __future__ import annotations

import math
import re
import sys

import torch

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARY = []  # kept alive: the definitions vanish with the Library object


def import_torchvision():
    """torchvision, or None when it is not installed."""
    try:
        import torchvision  # optional dependency
    except ImportError:
        return None
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            library.define(schema)
        _LIBRARY.append(library)
        import torchvision  # optional dependency, now loadable
    return torchvision


# builders that need a larger input than 3x64x64, and their size
INPUT_SIZE = {"inception_v3": 96, "maxvit_t": 224, "alexnet": 224}  # alexnet: ONNX needs 6x6 features
# builders taking the image size as an argument (ViT: 224 by default)
BUILD_KWARGS = {"vit_h_14": {"image_size": 56}}
VIT_SIZE = 64


def torchvision_builders() -> list[str]:
    tv = import_torchvision()
    return [] if tv is None else sorted(tv.models.list_models(module=tv.models))


def build_torchvision(name: str, seed: int = 0):
    """A random-init torchvision classifier (10 classes) in eval mode and its input shape."""
    tv = import_torchvision()
    kwargs, size = source_options(f"torchvision:{name}")
    torch.manual_seed(seed)
    model = tv.models.get_model(name, weights=None, **kwargs)
    return model.eval(), (3, size, size)


def family(name: str) -> str:
    """``resnet`` for resnet18, ``efficientnet`` for efficientnet_v2_s, ``wide`` for wide_resnet50_2."""
    return re.split(r"[_\d]", name)[0]


def builder_size(name: str) -> int:
    """Parameters of the builder's published weights (metadata only, nothing downloaded)."""
    tv = import_torchvision()
    weights = list(tv.models.get_model_weights(name))
    return int(weights[0].meta.get("num_params", 0)) if weights else 0


def representative_third(names) -> list[str]:
    """The smallest third (rounded up) of each family: deterministic, every family kept."""
    chosen = []
    by_family: dict[str, list[str]] = {}
    for name in names:
        by_family.setdefault(family(name), []).append(name)
    for members in by_family.values():
        chosen += sorted(members, key=lambda n: (builder_size(n), n))[:math.ceil(len(members) / 3)]
    return sorted(chosen)


def smallest_per_family(names) -> list[str]:
    by_family: dict[str, list[str]] = {}
    for name in names:
        by_family.setdefault(family(name), []).append(name)
    return sorted(min(members, key=lambda n: (builder_size(n), n)) for members in by_family.values())


def source_options(source: str) -> tuple[dict, int]:
    """Builder options and input side for ``torchvision:NAME`` / ``timm:NAME`` (10 classes, no weights)."""
    kind, name = source.split(":", 1)
    kwargs: dict = {"num_classes": 10}
    if kind == "timm":
        if name.startswith(("vit_", "deit_")):
            kwargs["img_size"] = VIT_SIZE
        return kwargs, VIT_SIZE if "img_size" in kwargs else 64
    kwargs.update(BUILD_KWARGS.get(name, {}))
    size = INPUT_SIZE.get(name, 64)
    if name.startswith("vit_"):
        kwargs.setdefault("image_size", VIT_SIZE)
        size = kwargs["image_size"]
    if name in ("googlenet", "inception_v3"):
        kwargs.update(aux_logits=False, init_weights=False)
    return kwargs, size


def build_source(source: str, seed: int = 0, size: int | None = None):
    """``source`` built through :func:`torchslim.models.create` (so torchslim.save takes it), in eval
    mode, and its input shape (``size``: another input side than the default)."""
    from torchslim.models import create

    import_torchvision()  # timm imports torchvision when it is installed
    kwargs, default = source_options(source)
    size = size or default
    torch.manual_seed(seed)
    model = create(source, input_size=(size, size), **kwargs)
    return model.eval(), (3, size, size)


_RELOAD = """
import sys, torch
from safetensors.torch import load_file, save_file
import torchslim
torch.set_num_threads(int(sys.argv[4]))
model = torchslim.load(sys.argv[1])
with torch.no_grad():
    save_file({"y": model(load_file(sys.argv[2])["x"]).contiguous()}, sys.argv[3])
"""


def reload_in_fresh_process(model, example: torch.Tensor, folder: str) -> str | None:
    """Save ``model``, load it in a new Python process and run ``example`` there.  Returns None
    when that output is bit-identical to this process's, else the first line of what differed."""
    import os
    import subprocess

    from safetensors.torch import load_file, save_file

    import torchslim

    paths = [os.path.join(folder, n) for n in ("model.safetensors", "x.safetensors", "y.safetensors")]
    torchslim.save(model, paths[0])
    save_file({"x": example.contiguous()}, paths[1])
    with torch.no_grad():
        expected = model(example)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _RELOAD, *paths, str(torch.get_num_threads())],
                          capture_output=True, text=True, env=env, cwd=root)
    if done.returncode != 0:
        return "load: " + ((done.stderr.strip().splitlines() or ["no output"])[-1])[:160]
    got = load_file(paths[2])["y"]
    if got.shape != expected.shape or not torch.equal(got, expected):
        return f"reloaded output differs (max |diff| {(got - expected).abs().max().item():.3g})"
    return None
