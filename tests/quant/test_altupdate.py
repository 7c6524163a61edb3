import pytest
import torch
from torch import nn

from torchslim import models
from torchslim.data import load_dataset
from torchslim.quant import QuantConfig, quantize
from torchslim.quant.altupdate import alternating_update, recalibrate_bn, solve_layer
from torchslim.data.calibration import calibration_images
from torchslim.quant.modules import QuantConv2d, QuantLinear


def _execution_order(model, x):
    """Names of the BWN layers in the order ``model`` calls them on ``x``, recorded by forward hooks."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))
             and m.weight_quant == "bwn"}
    order = []
    handles = [m.register_forward_hook(lambda m, i, o: order.append(names[m]) if names[m] not in order else None)
               for m in names]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for handle in handles:
            handle.remove()
    return order


def test_solver_never_increases_error_and_scales_are_least_squares():
    torch.manual_seed(0)
    X = torch.randn(500, 20, dtype=torch.float64)
    W = torch.randn(20, 6, dtype=torch.float64)
    Y = X @ W + 0.1 * torch.randn(500, 6, dtype=torch.float64)
    H, G, yy = X.T @ X, X.T @ Y, (Y * Y).sum(0)
    B0 = torch.where(W >= 0, 1.0, -1.0).double()
    A0 = W.abs().mean(0)
    B, A, history = solve_layer(H, G, yy, B0, A0, iterations=20)
    assert all(b <= a + 1e-9 * history[0] for a, b in zip(history, history[1:]))
    assert history[-1] < history[0]
    assert set(B.unique().tolist()) <= {-1.0, 1.0} and (A >= 0).all()
    # Closed-form A is optimal for the final B: the error equals the direct residual.
    direct = ((Y - X @ (B * A)) ** 2).sum().item()
    assert direct == pytest.approx(history[-1], rel=1e-9)
    for n in range(6):
        best = torch.linalg.lstsq((X @ B[:, n]).unsqueeze(1), Y[:, n:n + 1]).solution.item()
        assert abs(best) == pytest.approx(A[n].item(), rel=1e-6)


def _float_and_quantized():
    """A tiny float vgg11 (BN statistics from 32 digits), those batches, and its hwgq-bwn copy."""
    torch.manual_seed(0)
    float_model = models.create("vgg11", width_mult=0.0625).eval()
    batches = calibration_images(load_dataset("digits-32", "train"), images=32, batch_size=32)
    recalibrate_bn(float_model, batches)
    float_model.eval()
    qmodel = quantize(float_model, QuantConfig(method="hwgq-bwn"))
    return float_model, batches, qmodel


def test_layerwise_update_reduces_every_layer_error_and_keeps_binary_codes():
    float_model, batches, qmodel = _float_and_quantized()
    tuned, reports = alternating_update(qmodel, batches, reference=float_model, iterations=3)
    assert [r.name for r in reports] == _execution_order(qmodel, batches[0])
    assert len(reports) == 7  # every conv but the first (kept float)
    for report in reports:
        assert report.error_after <= report.error_before
        assert all(b <= a + 1e-9 for a, b in zip(report.history, report.history[1:]))
    assert any(r.error_after < 0.5 * r.error_before for r in reports)
    codes, scale = tuned.features[4].encode()
    assert set(codes.unique().tolist()) == {-1, 1} and (scale > 0).all()
    # the caller's quantized model is untouched
    assert torch.equal(qmodel.features[4].weight, quantize(float_model, QuantConfig()).features[4].weight)


class _DefinedOutOfOrder(nn.Module):
    """BWN layers defined in another order than ``forward`` runs them, one of them in a block."""

    def __init__(self):
        super().__init__()
        self.head = QuantLinear(8, 5, weight_quant="bwn")
        self.late = QuantConv2d(8, 8, 3, padding=1, bias=False, weight_quant="bwn")
        self.block = nn.Sequential(nn.BatchNorm2d(8), nn.ReLU(), QuantConv2d(8, 8, 3, padding=1, weight_quant="bwn"))
        self.early = QuantConv2d(8, 8, 3, padding=1, bias=False, weight_quant="bwn")
        self.bn = nn.BatchNorm2d(8)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.bn(self.early(torch.relu(self.stem(x)))))
        x = torch.relu(self.late(self.block(x)))
        return self.head(x.mean((2, 3)))


def test_layers_are_updated_in_execution_order_not_definition_order():
    torch.manual_seed(0)
    model = _DefinedOutOfOrder().eval()
    batches = [torch.randn(16, 3, 8, 8), torch.randn(16, 3, 8, 8)]
    order = _execution_order(model, batches[0])
    assert order == ["early", "block.2", "late", "head"]
    assert order != [n for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, reports = alternating_update(model, batches, iterations=2)
    assert [r.name for r in reports] == order
    for report in reports:
        assert report.error_after <= report.error_before
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the caller's model untouched


def test_guarded_update_never_moves_away_from_the_float_model():
    from torchslim.quant.altupdate import teacher_gap

    float_model, batches, qmodel = _float_and_quantized()
    teacher = [torch.log_softmax(float_model(x), 1) for x in batches]
    start = teacher_gap(recalibrate_bn(qmodel, batches).eval(), batches, teacher)
    tuned, reports = alternating_update(qmodel, batches, reference=float_model, iterations=3, guard=True)
    assert teacher_gap(tuned, batches, teacher) <= start
    assert any(r.accepted for r in reports)
    for report in reports:  # a rejected layer keeps its weights exactly
        if not report.accepted:
            assert torch.equal(tuned.get_submodule(report.name).weight, qmodel.get_submodule(report.name).weight)
    with pytest.raises(Exception, match="reference"):
        alternating_update(qmodel, batches, guard=True)


def test_calibration_batches_skip_takes_the_following_images():
    data = load_dataset("digits-32", "train")
    first = torch.cat(calibration_images(data, 700, batch_size=256))
    assert torch.equal(torch.cat(calibration_images(data, 300, batch_size=256, skip=300)), first[300:600])
    assert torch.equal(torch.cat(calibration_images(data, 100, batch_size=64, skip=256)), first[256:356])
