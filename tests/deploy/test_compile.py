import pytest
import torch
from torch import nn

import torchslim
from torchslim import models
from torchslim.deploy import PackedBinaryConv2d, compile, memory_report
from torchslim.quant import QuantConfig, freeze, quantize
from torchslim.quant.convert import QUANT_METHODS

BINARY_METHODS = [name for name, (_, bits, _, _) in QUANT_METHODS.items() if bits == 1 and name != "bwn"]


def _frozen(name, method, width=0.25, seed=0):
    torch.manual_seed(seed)
    model = quantize(models.create(name, width_mult=width), QuantConfig(method=method)).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics, as after training
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return freeze(model).eval()


# HWGQ needs BN right before each activation, which a residual add breaks.
CASES = [("vgg14", m) for m in BINARY_METHODS] + [("resnet20", m) for m in BINARY_METHODS if "hwgq" not in m]


@pytest.mark.filterwarnings("ignore:.*1x1 conv")
@pytest.mark.parametrize("name, method", CASES)
def test_compiled_model_equals_the_frozen_model(name, method):
    frozen = _frozen(name, method)
    compiled = compile(frozen)
    packed = [m for m in compiled.modules() if isinstance(m, PackedBinaryConv2d)]
    assert len(packed) == len(compiled.torchslim_meta["compiled_layers"]) > 0
    # the first conv and the classifier stay float
    assert not isinstance(next(m for m in compiled.modules() if hasattr(m, "kernel_size")), PackedBinaryConv2d)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(compiled(x), frozen(x))
    # the caller's model is unchanged
    assert not any(isinstance(m, PackedBinaryConv2d) for m in frozen.modules())


def test_vgg14_binary_layers_are_packed_about_32x():
    compiled = compile(_frozen("vgg14", "hwgq-bwn", width=1.0))
    report = memory_report(compiled)
    assert report["binary_layers"] == 12
    assert report["float32_bytes"] / report["packed_bytes"] > 31


def test_compile_freezes_a_quantization_aware_model_and_round_trips(tmp_path):
    torch.manual_seed(0)
    qat = quantize(models.create("vgg11", width_mult=0.25), QuantConfig(method="xnor")).eval()
    compiled = compile(qat)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(compiled(x), freeze(qat).eval()(x))
    torchslim.save(compiled, tmp_path / "c.safetensors")
    loaded = torchslim.load(tmp_path / "c.safetensors")
    with torch.no_grad():
        assert torch.equal(loaded(x), compiled(x))


@pytest.mark.parametrize("act_bits, planes", [(2, 2), (3, 3)])
def test_compile_packs_evenly_spaced_levels_as_binary_weighted_planes(act_bits, planes):
    torch.manual_seed(0)
    model = quantize(models.create("vgg11", width_mult=0.25), QuantConfig(method="dorefa", act_bits=act_bits)).eval()
    frozen = freeze(model).eval()
    compiled = compile(frozen)
    packed = [m for m in compiled.modules() if isinstance(m, PackedBinaryConv2d)]
    assert packed and all(m.binary and m.steps.numel() == planes for m in packed)
    chained = [m for m in packed if m.out_levels is not None and not m.out_values]
    assert chained and all(m.kernel().packed_planes == planes for m in chained)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(compiled(x), frozen(x))


def test_float_layers_run_on_one_thread_while_kernels_use_torchs_count(monkeypatch):
    from torchslim.deploy.kernels import KernelChain

    frozen = _frozen("vgg11", "xnor")
    kernel_threads, float_threads = [], []
    call = KernelChain.__call__  # the packed layers run as one chain, with a thread count per layer
    monkeypatch.setattr(KernelChain, "__call__", lambda self, x, threads: kernel_threads.extend(threads)
                        or call(self, x, threads))
    x = torch.randn(2, 3, 32, 32)
    outputs = {}
    previous = torch.get_num_threads()
    try:
        for cap in (1, None):
            compiled = compile(frozen, float_threads=cap)
            first = next(m for m in compiled.modules() if isinstance(m, nn.Conv2d))  # the float first layer
            first.register_forward_hook(lambda *_: float_threads.append(torch.get_num_threads()))
            for threads in (3, 1):
                torch.set_num_threads(threads)
                kernel_threads.clear()
                float_threads.clear()
                with torch.no_grad():
                    outputs[cap, threads] = compiled(x)
                assert set(kernel_threads) == {threads} and len(kernel_threads) == 7
                assert float_threads == [threads if cap is None else 1]
                assert torch.get_num_threads() == threads  # restored after the call
            torch.set_num_threads(3)
            with pytest.raises(RuntimeError):
                compiled(torch.randn(2, 5, 32, 32))  # wrong channel count: the first conv raises
            assert torch.get_num_threads() == 3  # restored after a failed call too
    finally:
        torch.set_num_threads(previous)
    want = outputs[1, 1]
    assert all(torch.equal(out, want) for out in outputs.values())  # thread counts never change results


def test_reused_activation_buffers_never_leak_between_calls_or_threads():
    """Packed activations between chained layers live in per-thread buffers reused by the
    next call: earlier outputs stay intact, and concurrent callers get their own results."""
    import threading

    frozen = _frozen("vgg14", "hwgq-zero-uniform-bwn")
    compiled = compile(frozen, threads=1)
    inputs = [torch.randn(2, 3, 32, 32) for _ in range(4)]
    with torch.no_grad():
        expected = [frozen(x) for x in inputs]
        first = compiled(inputs[0])
        kept = first.clone()
        for x, want in zip(inputs, expected):
            assert torch.equal(compiled(x), want)
        assert torch.equal(first, kept)
    results, errors = {}, []

    def worker(index):
        try:
            with torch.no_grad():
                results[index] = [compiled(inputs[(index + k) % 4]) for k in range(6)]
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, outputs in results.items():
        assert all(torch.equal(out, expected[(index + k) % 4]) for k, out in enumerate(outputs))


def test_a_hook_on_a_chained_layer_runs_and_changed_weights_reach_the_chain(monkeypatch):
    """Packed layers chained into one native call still honour a forward hook on one of
    them (it sees that layer's packed output), and new codes set on a layer are used."""
    from torchslim.deploy import build

    frozen = _frozen("vgg11", "xnor")
    compiled = compile(frozen, threads=1)
    x = torch.randn(2, 3, 32, 32)
    packed = [m for m in compiled.modules() if isinstance(m, PackedBinaryConv2d)]
    seen = []
    with torch.no_grad():
        want = compiled(x)
        handle = packed[2].register_forward_hook(lambda _m, _i, out: seen.append(out.clone()))
        assert torch.equal(compiled(x), want)
        assert len(seen) == 1 and seen[0].dtype == torch.int64  # the packed activations it passes on
        handle.remove()
        assert torch.equal(compiled(x), want) and len(seen) == 1
        layer = packed[3]
        layer.set_codes(-layer.codes(), layer.scale.clone(), layer.bias)  # every weight of one layer flipped
        changed = compiled(x)
        assert not torch.equal(changed, want)
        monkeypatch.setattr(build, "native_library", lambda: None)
        monkeypatch.setattr(torchslim.deploy.modules, "native_library", lambda: None)
        assert torch.equal(compiled(x), changed)  # the PyTorch path, reading the codes, agrees


@pytest.mark.parametrize("name,folded", [("bireal_vgg14", ["features.0.0"]), ("bireal_resnet18", ["stem.0"]),
                                         ("vgg14", [])])
def test_inexact_compile_folds_the_float_batchnorm_no_packing_took(name, folded):
    torch.manual_seed(0)
    frozen = freeze(quantize(models.create(name, width_mult=0.25), QuantConfig(method="xnor" if name == "vgg14"
                                                                                else "bireal")).eval()).eval()
    exact, inexact = compile(frozen), compile(frozen, exact=False)
    assert exact.torchslim_meta["float_batchnorm_folded"] == []
    assert inexact.torchslim_meta["float_batchnorm_folded"] == folded
    for path in folded:  # the BatchNorm after the conv is gone, its conv now has the bias it became
        assert inexact.get_submodule(path).bias is not None
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        want = frozen(x)
        torch.testing.assert_close(inexact(x), want, rtol=1e-4, atol=1e-4)
        if not folded:  # nothing to fold: still bit for bit
            assert torch.equal(inexact(x), want)
