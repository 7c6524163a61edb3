"""``train_quantized(model, QATConfig(...), data)``: the whole quantization-aware recipe in one call.

Quantize a copy, fit the activation levels and the BatchNorm statistics on calibration
images, optionally start from the alternating update, fine-tune with the latent weights
clipped, re-estimate BatchNorm, optionally finish with the (guarded) alternating update,
and freeze to integer codes plus scales.  The caller's model is never changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..config import ConfigMixin
from ..data.calibration import calibration_images
from ..errors import UserError, unknown_choice
from ..nn import record_meta
from ..train import TrainConfig, fit
from .altupdate import alternating_update, recalibrate_bn
from .calibrate import calibrate_act_scales
from .convert import QuantConfig, clip_latent_weights, freeze, quantize

__all__ = ["ACT_SCALES", "QATConfig", "QATResult", "train_quantized"]

ACT_SCALES = ("fit", "unit")


@dataclass
class QATConfig(ConfigMixin):
    """The layers to quantize (``quant``), then how the quantized copy is calibrated and trained.

    ``act_scale``: ``"fit"`` scales each HWGQ layer's levels to its input on the calibration
    images, ``"unit"`` keeps the unit half-normal levels.  ``alt_guard`` (default: on with
    ``alt_update``) keeps a layer's updated weights only if the outputs on the next ``calib``
    held-out images move closer to the float model's.
    """

    option_kind = "quantization-aware training option"

    quant: QuantConfig = field(default_factory=QuantConfig)
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 128
    seed: int = 0
    device: str = "cpu"
    calib: int = 1024
    act_scale: str = "fit"
    alt_init: bool = False
    alt_update: bool = False
    alt_guard: bool | None = None

    def __post_init__(self):
        if isinstance(self.quant, dict):
            self.quant = QuantConfig.from_dict(self.quant)
        if self.act_scale not in ACT_SCALES:
            raise unknown_choice("activation scale", self.act_scale, ACT_SCALES)
        if self.epochs < 0 or self.calib < 1:
            raise UserError(f"need epochs >= 0 and calib >= 1 (got {self.epochs}, {self.calib})")
        if self.alt_guard and not self.alt_update:
            raise UserError("alt_guard sets how the alternating update is guarded: set alt_update too")
        self.alt_guard = self.alt_update if self.alt_guard is None else self.alt_guard

    def train_config(self) -> TrainConfig:
        """The fine-tune: Adam, cosine schedule, no weight decay (the latent weights are clipped)."""
        return TrainConfig(epochs=self.epochs, lr=self.lr, optimizer="adam", weight_decay=0.0, schedule="cosine",
                           batch_size=self.batch_size, seed=self.seed, device=self.device)


@dataclass
class QATResult:
    """The frozen model and what each step did (the fine-tune's history, fitted levels, update reports)."""

    model: nn.Module
    history: list = field(default_factory=list)
    act_scales: dict = field(default_factory=dict)
    alt_init: list = field(default_factory=list)
    alt_update: list = field(default_factory=list)


def train_quantized(model: nn.Module, config: QATConfig, data, *, loss_fn=None,
                    progress: bool = False) -> QATResult:
    """A frozen quantized copy of ``model`` trained on ``data`` (an ImageSet); see the module notes.

    ``loss_fn`` replaces the fine-tune's loss, e.g. distillation from the float model
    (:func:`torchslim.distill.kd_loss_fn`).
    """
    qmodel = quantize(model, config.quant)
    batches = calibration_images(data, config.calib)
    scales = calibrate_act_scales(qmodel, batches) if config.act_scale == "fit" else {}
    recalibrate_bn(qmodel, batches)
    init_reports = []
    if config.alt_init:
        qmodel, init_reports = alternating_update(qmodel, batches, reference=model, progress=progress)
    history = {"epochs": []}
    if config.epochs:
        history = fit(qmodel, data, config.train_config(), loss_fn=loss_fn, on_step=clip_latent_weights,
                      progress=progress)
        qmodel.cpu()
        recalibrate_bn(qmodel, batches)
    reports = []
    if config.alt_update:
        judge = calibration_images(data, config.calib, skip=config.calib) if config.alt_guard else None
        qmodel, reports = alternating_update(qmodel, batches, reference=model, progress=progress,
                                             guard=config.alt_guard, guard_batches=judge)
    frozen = freeze(qmodel)
    steps = {key: value for key, value in config.to_dict().items() if key != "quant"}
    record_meta(frozen, qat=steps)
    return QATResult(frozen, history["epochs"], scales, [r.to_dict() for r in init_reports],
                     [r.to_dict() for r in reports])
