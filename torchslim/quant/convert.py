"""``quantize(model, QuantConfig(...))`` and ``freeze(model)``.

``quantize`` returns a quantization-aware *copy* of a float model: every
``Conv2d`` / ``Linear`` becomes a :class:`QuantConv2d` / :class:`QuantLinear`
(except the first and last layers by default) and every ReLU becomes an
:class:`ActQuant`.  The caller's model is never modified.

``freeze`` turns a trained quantization-aware model into its deployed form:

* each quantized layer becomes :class:`FrozenConv2d` / :class:`FrozenLinear` holding
  ``codes`` (int8: {-1, +1} for binary methods, {-1, 0, +1} for TWN, odd integers for
  k-bit DoReFa, [-127, 127] for int8) and ``scale`` (float32, one per output channel),
  so that ``W = codes * scale``;
* activation quantizers stay :class:`ActQuant` with their ``levels`` and ``thresholds``;
* float layers (first/last by default), BatchNorm and pooling are unchanged.

The frozen model's outputs are bit-identical to the training model's eval outputs.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import ConfigMixin
from ..errors import UserError, unknown_choice
from ..nn import record_meta, set_submodule
from .modules import (ActQuant, FrozenConv2d, FrozenLinear, QuantConv2d, QuantLinear, get_act_quantizer,
                      get_weight_quantizer, symbolic_trace)

__all__ = ["QUANT_METHODS", "QuantConfig", "LayerPlan", "quantize", "freeze", "clip_latent_weights",
           "plan_quantization"]

# method -> (weight quantizer, default weight bits, activation quantizer or None, default activation bits)
QUANT_METHODS: dict[str, tuple] = {
    "bnn": ("sign", 1, "sign", 1),
    "bnn-stochastic": ("stochastic_sign", 1, "stochastic_sign", 1),
    "bwn": ("bwn", 1, None, None),
    "xnor": ("bwn", 1, "sign", 1),
    "bireal": ("bwn", 1, "approx_sign", 1),  # for the bireal_* zoo nets: real shortcuts, RSign, RPReLU
    "twn": ("twn", 2, None, None),
    "dorefa": ("dorefa", 1, "dorefa", 2),
    "hwgq-bwn": ("bwn", 1, "hwgq", 2),
    "hwgq-uniform-bwn": ("bwn", 1, "hwgq_uniform", 2),
    "hwgq-zero-uniform-bwn": ("bwn", 1, "hwgq_zero_uniform", 2),
    "int8-weights": ("int8", 8, None, None),
}

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh)
FLOAT = "float"


@dataclass
class QuantConfig(ConfigMixin):
    """What to quantize and how.

    ``method`` picks a preset from :data:`QUANT_METHODS`; ``weight`` / ``act`` name registry
    quantizers to override it (``act="float"`` keeps activations float).  ``overrides``
    maps a module name to ``"float"`` or to a dict of any of ``weight``, ``weight_bits``,
    ``act``, ``act_bits`` for that one layer.
    """

    option_kind = "quantization option"

    method: str = "hwgq-bwn"
    weight_bits: int | None = None
    act_bits: int | None = None
    weight: str | None = None
    act: str | None = None
    keep_first_last: bool = True
    overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in QUANT_METHODS:
            raise unknown_choice("quantization method", self.method, QUANT_METHODS)
        for key in ("weight_bits", "act_bits"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{key} must be a positive integer, got {value!r}")
        if self.act_bits is not None and (self.act or QUANT_METHODS[self.method][2]) in (None, FLOAT):
            raise UserError(f"method {self.method!r} keeps activations float, so act_bits={self.act_bits} would be "
                            f"ignored; choose a method with quantized activations (dorefa, hwgq-bwn, ...)")
        self.resolve()  # validates names and bit widths

    def resolve(self, name: str = "") -> dict:
        """The settings for module ``name``: weight, weight_bits, act, act_bits (None = float)."""
        weight, weight_bits, act, act_bits = QUANT_METHODS[self.method]
        settings = {"weight": self.weight or weight, "weight_bits": self.weight_bits or weight_bits,
                    "act": self.act or act, "act_bits": self.act_bits or act_bits}
        override = self.overrides.get(name) if name else None
        if override == FLOAT:
            return {"weight": None, "weight_bits": None, "act": None, "act_bits": None}
        if override is not None:
            if not isinstance(override, dict):
                raise UserError(f"override for {name!r} must be 'float' or a dict, got {override!r}")
            for key in override:
                if key not in settings:
                    raise unknown_choice(f"override key for {name!r}", key, settings)
            settings.update(override)
        if settings["act"] == FLOAT:
            settings["act"] = settings["act_bits"] = None
        if settings["weight"] == FLOAT:
            settings["weight"] = settings["weight_bits"] = None
        for kind in ("weight", "act"):
            bits = settings[f"{kind}_bits"]
            if settings[kind] is not None and (isinstance(bits, bool) or not isinstance(bits, int)):
                raise UserError(f"{kind} bits must be an integer, got {bits!r}")
        if settings["weight"] is not None:
            get_weight_quantizer(settings["weight"], settings["weight_bits"])
        if settings["act"] is not None:
            get_act_quantizer(settings["act"], settings["act_bits"])
        return settings


@dataclass
class LayerPlan:
    """One planned replacement: module ``name`` becomes ``kind`` with ``settings``."""

    name: str
    kind: str  # "weight" or "act"
    quantizer: str
    bits: int

    def __str__(self) -> str:
        return f"{self.name}: {self.kind} {self.quantizer} {self.bits}-bit"


def _trace(model: nn.Module):
    try:
        return symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001  (fx raises many types)
        raise UserError(f"cannot trace {type(model).__name__} with torch.fx to plan quantization: "
                        f"{str(exc).splitlines()[0][:160]}") from None


def _execution_order(graph_module) -> tuple[list[str], dict[str, str | None]]:
    """Module names in call order, and for each module the module producing its input (None: an op)."""
    modules = dict(graph_module.named_modules())
    order, producer = [], {}
    for node in graph_module.graph.nodes:
        if node.op != "call_module":
            continue
        order.append(node.target)
        source = node.args[0] if node.args else None
        producer[node.target] = modules[source.target] if getattr(source, "op", None) == "call_module" else None
    return order, producer


def plan_quantization(model: nn.Module, config: QuantConfig) -> list[LayerPlan]:
    """The replacements ``quantize`` would make, without touching ``model``."""
    order, producer = _execution_order(_trace(model))
    modules = dict(model.named_modules())
    weighted = [n for n in order if isinstance(modules[n], (nn.Conv2d, nn.Linear))]
    keep = set()
    if config.keep_first_last and weighted:
        keep = {weighted[0], weighted[-1]}
    for name in config.overrides:
        if name not in modules:
            raise unknown_choice("module name in overrides", name, [n for n in modules if n])
    plans, seen = [], set()
    for name in order:
        if name in seen:
            continue
        seen.add(name)
        module, settings = modules[name], config.resolve(name)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and settings["weight"] and (
                name not in keep or isinstance(config.overrides.get(name), dict)):
            plans.append(LayerPlan(name, "weight", settings["weight"], settings["weight_bits"]))
        elif isinstance(module, ACTIVATIONS) and settings["act"]:
            quantizer = get_act_quantizer(settings["act"], settings["act_bits"])
            source = producer.get(name)
            if quantizer.needs_bn and not isinstance(source, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                raise UserError(
                    f"{settings['act']} needs BatchNorm right before the activation, but {name!r} follows "
                    f"{type(source).__name__ if source is not None else 'a non-module op (e.g. a residual add)'}; "
                    f"in Python keep such layers "
                    f"float, e.g. QuantConfig(overrides={{{name!r}: 'float'}}); on the command line use a method "
                    f"without HWGQ activations (bwn, xnor, dorefa, ...) or a model with BatchNorm before every "
                    f"activation (binary_resnet20)")
            plans.append(LayerPlan(name, "act", settings["act"], settings["act_bits"]))
    return plans


def _warn_on(plans: list[LayerPlan], modules: dict) -> None:
    for plan in plans:
        module = modules[plan.name]
        if plan.kind == "weight" and plan.bits <= 2 and isinstance(module, nn.Conv2d) \
                and tuple(module.kernel_size) == (1, 1):
            warnings.warn(f"{plan.name} is a 1x1 conv with {plan.bits}-bit weights: 1x1 convs lose the most "
                          "accuracy in binary nets; consider keeping it float (overrides)", stacklevel=3)
        if plan.kind == "act" and plan.bits > 4:
            warnings.warn(f"{plan.name} uses {plan.bits}-bit activations; above 4 bits low-bit nets gain little "
                          "accuracy for the extra cost", stacklevel=3)


def _quant_layer(module: nn.Module, plan: LayerPlan) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        layer = QuantConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                            module.padding, module.dilation, module.groups, module.bias is not None,
                            plan.quantizer, plan.bits)
    else:
        layer = QuantLinear(module.in_features, module.out_features, module.bias is not None,
                            plan.quantizer, plan.bits)
    layer.load_state_dict(module.state_dict())
    return layer.to(module.weight.device)


def quantize(model: nn.Module, config: QuantConfig | None = None) -> nn.Module:
    """A quantization-aware copy of ``model`` (plans first, so a bad config leaves nothing changed)."""
    config = config or QuantConfig()
    plans = plan_quantization(model, config)
    modules = dict(model.named_modules())
    _warn_on(plans, modules)
    quantized = copy.deepcopy(model)
    for plan in plans:
        source = modules[plan.name]
        if plan.kind == "weight":
            set_submodule(quantized, plan.name, _quant_layer(source, plan))
        else:
            set_submodule(quantized, plan.name, ActQuant(plan.quantizer, plan.bits).to(_device(model)))
    record_meta(quantized, model, quant={"config": config.to_dict(), "layers": [str(p) for p in plans],
                                         "frozen": False})
    clip_latent_weights(quantized)
    return quantized


def _device(model):
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def clip_latent_weights(model: nn.Module) -> None:
    """Clip latent weights to [-1, 1] for methods that need it; use as ``fit(on_step=...)``."""
    for module in model.modules():
        if isinstance(module, (QuantConv2d, QuantLinear)):
            module.clip_latent_()


def _frozen_layer(module) -> nn.Module:
    codes, scale = module.encode()
    bias = module.bias is not None
    if isinstance(module, QuantConv2d):
        frozen = FrozenConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                              module.padding, module.dilation, module.groups, bias, module.weight_quant,
                              module.weight_bits)
    else:
        frozen = FrozenLinear(module.in_features, module.out_features, bias, module.weight_quant, module.weight_bits)
    return frozen.to(module.weight.device).load_codes(codes, scale, module.bias)


@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """A deployable copy: quantized layers hold only int8 codes and per-channel scales."""
    frozen = copy.deepcopy(model).eval()
    for name, module in list(frozen.named_modules()):
        if isinstance(module, (QuantConv2d, QuantLinear)):
            set_submodule(frozen, name, _frozen_layer(module))
    noted = dict(getattr(model, "torchslim_meta", {}) or {}).get("quant", {})
    record_meta(frozen, model, quant={**noted, "frozen": True})
    return frozen
