"""Model sources: where an architecture comes from, as one string.

* ``zoo:NAME`` or a bare ``NAME``: torchslim's own zoo (:mod:`torchslim.models.registry`);
* ``torchvision:NAME``: any classification builder of ``torchvision.models`` (``torchslim[vision]``);
* ``timm:NAME``: any timm model (``torchslim[timm]``);
* ``PKG.MODULE:CALLABLE``: the user's own code, called with keyword arguments.

Models are always built without pretrained weights: nothing is fetched from the network.
A saved file records its source; :func:`build` rebuilds zoo, torchvision and timm sources
by itself, and imports a user's module only when the caller trusts its package.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import UserError, unknown_choice
from . import registry

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NO_DOWNLOAD = {"weights", "weights_backbone", "progress", "pretrained", "pretrained_cfg",
                "pretrained_cfg_overlay", "checkpoint_path", "cache_dir"}


@dataclass(frozen=True)
class Source:
    """A parsed source: ``kind`` is zoo, torchvision, timm or python; ``name`` is what follows."""

    kind: str
    name: str

    @property
    def text(self) -> str:
        """The canonical string (a zoo model keeps its bare name, as files always stored it)."""
        return self.name if self.kind in ("zoo", "python") else f"{self.kind}:{self.name}"


def parse_source(text) -> Source:
    """``"timm:resnet18"`` -> ``Source("timm", "resnet18")``; a bad string raises UserError."""
    if not isinstance(text, str) or not text:
        raise UserError(f"model source must be a non-empty string, got {text!r}")
    prefix, colon, name = text.partition(":")
    if not colon or prefix == "zoo":
        return Source("zoo", name if colon else text)
    if prefix in _BUILDERS and prefix != "python" and name:
        return Source(prefix, name)
    if _DOTTED.fullmatch(prefix) and _IDENTIFIER.fullmatch(name):
        return Source("python", text)
    raise UserError(f"model source {text[:80]!r} is not zoo:NAME, torchvision:NAME, timm:NAME "
                    "or PKG.MODULE:CALLABLE")


def _torchvision_ops_declared() -> None:
    """Declare ``torchvision::nms``/``qnms`` so torchvision imports against a torch its wheel was not built for.

    PyPI's torchvision links its compiled ops against the CUDA build of torch; with the CPU build
    the import fails with "operator torchvision::nms does not exist".  The classification models
    are pure Python and never call these ops.
    """
    for name in [key for key in sys.modules if key == "torchvision" or key.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half-initialised modules behind
    global _TORCHVISION_OPS
    _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_OPS.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")


_TORCHVISION_OPS = None


def import_torchvision():
    """``torchvision``, or a UserError naming the extra to install."""
    try:
        import torchvision  # optional dependency: torchslim[vision]
    except ImportError:
        raise UserError("torchvision models need torchvision: pip install 'torchslim[vision]'") from None
    except RuntimeError as exc:
        if "torchvision::nms does not exist" not in str(exc) or _TORCHVISION_OPS is not None:
            raise
        _torchvision_ops_declared()
        import torchvision  # optional dependency, now with its op schemas declared
    return torchvision


def import_timm():
    """``timm``, or a UserError naming the extra to install."""
    try:
        import_torchvision()  # timm imports torchvision when present: let that import succeed first
    except UserError:
        pass
    try:
        import timm  # optional dependency: torchslim[timm]
    except ImportError:
        raise UserError("timm models need timm: pip install 'torchslim[timm]'") from None
    return timm


def _check_kwargs(source: Source, kwargs: dict) -> None:
    refused = sorted(_NO_DOWNLOAD & set(kwargs)) if source.kind != "python" else []
    if refused:
        raise UserError(f"model option {refused[0]!r} is not taken: torchslim builds {source.text} without "
                        "pretrained weights (give weights with `torchslim import --weights FILE`)")
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError):
        raise UserError(f"options for model {source.text} must be JSON values, got {kwargs!r}") from None


def _call(builder: Callable, source: Source, kwargs: dict) -> nn.Module:
    try:
        model = builder(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model {source.text} refused its options {kwargs}: {str(exc).splitlines()[0][:160]}") from None
    if not isinstance(model, nn.Module):
        raise UserError(f"{source.text} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _build_torchvision(source: Source, kwargs: dict) -> tuple[nn.Module, tuple]:
    models = import_torchvision().models
    names = models.list_models(module=models)
    if source.name not in names:
        raise unknown_choice("torchvision classification model", source.name, names)
    model = _call(lambda **kw: models.get_model(source.name, weights=None, **kw), source, kwargs)
    return model, (3, 299, 299) if source.name == "inception_v3" else (3, 224, 224)


def _build_timm(source: Source, kwargs: dict) -> tuple[nn.Module, tuple]:
    timm = import_timm()
    if not timm.is_model(source.name):
        guess = difflib.get_close_matches(source.name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(guess)}?)" if guess else ""
        raise UserError(f"unknown timm model {source.name!r}{hint}; timm.list_models() names them all")
    model = _call(lambda **kw: timm.create_model(source.name, pretrained=False, **kw), source, kwargs)
    shape = (getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224)
    return model, tuple(int(v) for v in shape)


def _build_python(source: Source, kwargs: dict) -> tuple[nn.Module, tuple]:
    module_name, _, attribute = source.name.partition(":")
    try:
        module = __import__(module_name, fromlist=["_"])  # the caller named and trusts this package
    except ImportError as exc:
        raise UserError(f"cannot import {module_name} for model {source.text}: {exc}") from None
    builder = getattr(module, attribute, None)
    if not callable(builder):
        raise UserError(f"{module_name} has no callable {attribute!r} (model {source.text})")
    return _call(builder, source, kwargs), (3, 224, 224)


_BUILDERS: dict[str, Callable[[Source, dict], tuple[nn.Module, tuple]]] = {
    "torchvision": _build_torchvision,
    "timm": _build_timm,
    "python": _build_python,
}


def is_trusted(source: Source, trust) -> bool:
    """Whether ``trust`` (package names) covers a python source's module."""
    module_name = source.name.partition(":")[0]
    return any(module_name == name or module_name.startswith(name + ".") for name in trust or ())


def check_trust(trust) -> tuple[str, ...]:
    """``trust`` as a tuple of package names (a bad entry raises UserError)."""
    if isinstance(trust, str):
        trust = [trust]
    names = tuple(trust or ())
    for name in names:
        if not isinstance(name, str) or not _DOTTED.fullmatch(name):
            raise UserError(f"trust entries are package names such as mypkg, got {name!r}")
    return names


def build(source_text: str, kwargs: dict | None = None, trust=(), input_size=None) -> nn.Module:
    """Build ``source_text`` with ``kwargs``; a python source only when ``trust`` names its package.

    ``trust=True`` trusts any package (the caller typed the source).
    """
    source = parse_source(source_text)
    if not isinstance(kwargs or {}, dict) or not all(isinstance(k, str) for k in kwargs or {}):
        raise UserError(f"options for model {source_text} must be a JSON object")
    kwargs = dict(kwargs or {})
    if source.kind == "zoo":
        if input_size is not None:
            kwargs["input_size"] = input_size
        return registry.create(source.name, **kwargs)
    if source.kind == "python" and trust is not True and not is_trusted(source, check_trust(trust)):
        package = source.name.split(".")[0].split(":")[0]
        raise UserError(f"model source {source.text} is user code, imported only when trusted: "
                        f"pass trust=[{package!r}] (CLI: --trust {package})")
    _check_kwargs(source, kwargs)
    model, shape = _BUILDERS[source.kind](source, kwargs)
    if input_size is not None:
        height, width = registry.check_input_size(input_size, shape[1:])
        shape = (shape[0], height, width)
    model.torchslim_arch = {"name": source.text, "kwargs": kwargs}
    model.input_shape = tuple(shape)
    return model


def build_on_meta(source_text: str, kwargs: dict | None = None, trust=(), input_size=None) -> nn.Module:
    """:func:`build` on the meta device: the structure and every shape, no memory for weights.

    A builder that reads tensor values while building (torchvision's regnet) is built for real,
    then moved to meta.
    """
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # initialisers warn about meta tensors
            return build(source_text, kwargs, trust, input_size)
    except UserError:
        raise
    except Exception:  # noqa: BLE001  (any builder failure on meta: retry for real)
        return build(source_text, kwargs, trust, input_size).to("meta")


def create(source: str, **kwargs) -> nn.Module:
    """Build a model from a source string (see the module docstring); bad input raises UserError.

    A zoo source takes the zoo's arguments (``num_classes``, ``in_channels``, ``width_mult``,
    ``input_size``); the others pass ``kwargs`` to their builder, and ``input_size=(H, W)``
    sets the recorded input shape.  The caller typed ``source``, so user code is trusted here.
    """
    input_size = kwargs.pop("input_size", None)
    return build(source, kwargs, trust=True, input_size=input_size)


def wrap(model: nn.Module, source: str, kwargs: dict | None = None, input_shape=None) -> nn.Module:
    """Mark a network built in this session as ``source(**kwargs)`` so :func:`torchslim.save` accepts it.

    ``source`` must rebuild the same architecture (before any pruning); its top-level type is checked.
    Returns ``model`` itself.
    """
    parsed = parse_source(source)
    if not isinstance(model, nn.Module):
        raise UserError(f"wrap takes a torch.nn.Module, got {type(model).__name__}")
    reference = build_on_meta(source, kwargs, trust=True)
    if type(reference) is not type(model):
        raise UserError(f"{source} builds a {type(reference).__name__}, but the model is a {type(model).__name__}")
    model.torchslim_arch = dict(reference.torchslim_arch)
    model.input_shape = tuple(input_shape) if input_shape else reference.input_shape
    if parsed.kind == "zoo":
        model.torchslim_arch["kwargs"] = dict(reference.torchslim_arch["kwargs"])
    return model


def split_options(text: str) -> tuple[str, dict]:
    """``'timm:resnet18{"drop_rate": 0.1}'`` -> ``("timm:resnet18", {"drop_rate": 0.1})`` (the CLI's form)."""
    if not isinstance(text, str) or "{" not in text:
        return text, {}
    source, brace, rest = text.partition("{")
    try:
        options = json.loads(brace + rest)
    except ValueError:
        options = None
    if not isinstance(options, dict):
        raise UserError(f"model options after {source!r} must be a JSON object, got {(brace + rest)[:80]!r}")
    return source.rstrip(":"), options


def is_source(text) -> bool:
    """Whether ``text`` names a model source (``NAME``, ``zoo:NAME``, ``torchvision:NAME``, ``timm:NAME``,
    ``PKG.MODULE:CALLABLE``, each optionally followed by JSON options); a zoo name must be in the zoo."""
    if not isinstance(text, str) or not text:
        return False
    try:
        source = parse_source(split_options(text)[0])
    except UserError:
        return False
    return source.kind != "zoo" or source.name in registry.list_models()


def _accepts(source: Source, argument: str) -> bool:
    if source.kind in ("torchvision", "timm"):
        return True
    module_name, _, attribute = source.name.partition(":")
    try:  # the caller typed this source: importing it is theirs to ask
        params = inspect.signature(getattr(__import__(module_name, fromlist=["_"]), attribute)).parameters.values()
    except (ImportError, AttributeError, TypeError, ValueError):
        return False  # build() names the problem
    return any(p.name == argument or p.kind is p.VAR_KEYWORD for p in params)


def create_for_data(text: str, num_classes: int, in_channels: int | None = None, width_mult: float = 1.0,
                    input_size=None) -> nn.Module:
    """A model from a CLI ``--model`` value, shaped for a data set (classes, channels, image size).

    A zoo source takes all four; the others take ``num_classes`` (and timm ``in_chans``), and the
    image size only sets the recorded input shape.  ``--width-mult`` is the zoo's alone.
    """
    source_text, kwargs = split_options(text)
    source = parse_source(source_text)
    if source.kind == "zoo":
        return registry.create(source.name, num_classes=num_classes, in_channels=in_channels,
                               width_mult=width_mult, input_size=input_size, **kwargs)
    if width_mult != 1.0:
        raise UserError(f"--width-mult applies to zoo models, not {source.text}")
    if "num_classes" not in kwargs and _accepts(source, "num_classes"):
        kwargs["num_classes"] = num_classes
    if in_channels not in (None, 3):
        if source.kind != "timm":
            raise UserError(f"{source.text} takes 3-channel images but the data has {in_channels}; "
                            "use a 3-channel data set (e.g. fashion-mnist-32)")
        kwargs.setdefault("in_chans", in_channels)
    return build(source_text, kwargs, trust=True, input_size=input_size)
