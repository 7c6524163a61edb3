"""Quantization and binary networks: STE quantizers, HWGQ, BWN/XNOR/TWN/DoReFa, the
alternating-update fine-tune, freezing to integer codes, bit packing and int8 deployment.

    deployed = train_quantized(model, QATConfig(quant=QuantConfig(method="hwgq-bwn", act_bits=2)), train).model
    # the steps inside: quantize(model, QuantConfig) -> calibrate -> fit -> freeze(qmodel)
"""

from .convert import QUANT_METHODS, QuantConfig, clip_latent_weights, freeze, plan_quantization, quantize
from .qat import ACT_SCALES, QATConfig, QATResult, train_quantized
from .modules import (ACT_QUANTIZERS, WEIGHT_QUANTIZERS, ActQuant, FrozenConv2d, FrozenLinear, QuantConv2d,
                      QuantLinear, get_act_quantizer, get_weight_quantizer)

__all__ = [
    "ACT_QUANTIZERS", "QUANT_METHODS", "WEIGHT_QUANTIZERS", "ActQuant", "FrozenConv2d", "FrozenLinear", "QuantConfig",
    "QuantConv2d", "QuantLinear", "clip_latent_weights", "freeze", "get_act_quantizer", "get_weight_quantizer",
    "plan_quantization", "quantize", "ACT_SCALES", "QATConfig", "QATResult", "train_quantized",
]
