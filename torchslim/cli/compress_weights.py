"""``torchslim compress-weights``: back-end compression of a saved model.

Methods (``COMPRESSORS``): ``magnitude`` (unstructured pruning with masks held while
fine-tuning), ``kmeans`` (scalar weight sharing, centroids fine-tuned),
``pq`` / ``qcnn`` (product quantization fitted to the weights / to the layer
outputs), ``svd`` / ``tucker`` (low-rank factorisation).  The result is saved
with :func:`torchslim.save`; ``torchslim export --format packed`` then writes
its real compressed bytes.
"""

from __future__ import annotations

import copy
import time

from ..errors import UserError
from ..flags.compress import add_compress_weights_flags
from ..nn import Registry, record_meta
from .common import check_model_data, check_out_path, emit, kd_loss_for, load_data

# method -> (compress(model, args, train_set), default fine-tune optimizer, lr, weight decay)
COMPRESSORS = Registry("compression method")

_MAGNITUDE, _KMEANS, _CODEBOOK, _LOWRANK = ("magnitude",), ("kmeans",), ("kmeans", "pq", "qcnn"), ("svd", "tucker")
# flag -> the methods that use it; given with any other method it is an error rather than ignored
METHOD_FLAGS = {
    "--sparsity": _MAGNITUDE, "--scope": _MAGNITUDE, "--schedule": _MAGNITUDE, "--agp-fraction": _MAGNITUDE,
    "--criterion": _MAGNITUDE, "--layer-sparsity": _MAGNITUDE,
    "--bits": _CODEBOOK, "--conv-bits": _KMEANS, "--layer-bits": _KMEANS, "--side-dtype": _KMEANS,
    "--init": _KMEANS, "--subvector": ("pq", "qcnn"), "--calib-samples": ("qcnn",),
    "--rank-energy": _LOWRANK, "--target-macs": _LOWRANK,
}
# what the method-specific flags mean when not given (--bits depends on the method: see each method)
DEFAULTS = {"sparsity": 0.9, "scope": "layer", "schedule": "oneshot", "criterion": "magnitude",
            "layer_sparsity": "", "layer_bits": "", "side_dtype": "float32", "init": "linear", "subvector": 4,
            "calib_samples": 256}


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def register_method(name: str, optimizer: str, lr: float, weight_decay: float):
    def decorator(fn):
        COMPRESSORS.register(name, (fn, optimizer, lr, weight_decay))
        return fn

    return decorator


def add_parser(subparsers):
    parser = subparsers.add_parser("compress-weights", help="prune, weight-share, product-quantize or factorise "
                                   "the weights of a saved model")
    add_compress_weights_flags(parser)
    parser.set_defaults(run=run)


def _exclude(args) -> tuple:
    return tuple(p.strip() for p in args.exclude.split(",") if p.strip())


def parse_layer_values(text: str, flag: str, cast, check) -> dict:
    """``NAME=V,NAME=V`` -> ``{name: value}``; one-line UserError naming the bad entry."""
    values = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, raw = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            value = cast(raw)
        except ValueError:
            raise UserError(f"{flag}: expected NAME=VALUE, got {item!r}") from None
        problem = check(value)
        if problem:
            raise UserError(f"{flag}: {name.strip()} {problem}, got {raw.strip()}")
        values[name.strip()] = value
    return values


def _layer_sparsity(args) -> dict:
    return parse_layer_values(args.layer_sparsity, "--layer-sparsity", float,
                              lambda v: None if 0 <= v < 1 else "must be in [0, 1)")


def _layer_bits(args) -> dict:
    return parse_layer_values(args.layer_bits, "--layer-bits", int,
                              lambda v: None if 1 <= v <= 16 else "must be in 1..16")


def _check_layer_names(model, args) -> None:
    """Unknown layer names in --layer-sparsity / --layer-bits fail before any data is loaded."""
    from ..errors import unknown_choice  # lazy: loads when the verb runs
    from ..sparse.magnitude import prunable_layers  # lazy: loads when the verb runs

    layers = prunable_layers(model, _exclude(args))
    for flag, names in (("--layer-sparsity", _layer_sparsity(args)), ("--layer-bits", _layer_bits(args))):
        for name in names:
            if name not in layers:
                raise unknown_choice(f"layer in {flag}", name, layers)


def _finetune_config(args):
    from ..train import TrainConfig  # lazy: loads when the verb runs

    _, optimizer, lr, weight_decay = COMPRESSORS[args.method]
    return TrainConfig(epochs=args.finetune_epochs, batch_size=args.batch_size, lr=args.lr or lr,
                       optimizer=optimizer, schedule="cosine", seed=args.seed,
                       weight_decay=weight_decay if args.weight_decay is None else args.weight_decay,
                       augment=not args.no_augment, device=args.device)


def _fit(model, args, train_set, on_step=None):
    from ..train import fit  # lazy: loads when the verb runs

    if args.finetune_epochs > 0:
        fit(model, train_set, _finetune_config(args), loss_fn=args.loss_fn, on_step=on_step,
            progress=not args.json)
    return model.cpu().eval()


@register_method("magnitude", "sgd", 0.01, 5e-4)
def _magnitude(model, args, train_set):
    from ..sparse import SparsityConfig, prunable_layers, sparsify  # lazy: loads when the verb runs

    layer_sparsity = _layer_sparsity(args)
    if layer_sparsity:  # the layers not named keep the global --sparsity
        layer_sparsity = {path: layer_sparsity.get(path, args.sparsity)
                          for path in prunable_layers(model, _exclude(args))}
    extra = {} if args.agp_fraction is None else {"agp_fraction": args.agp_fraction}
    config = SparsityConfig(sparsity=args.sparsity, scope=args.scope, schedule=args.schedule,
                            layer_sparsity=layer_sparsity, exclude=_exclude(args), criterion=args.criterion,
                            **extra)
    train_config = _finetune_config(args) if args.finetune_epochs > 0 else None
    return sparsify(model, config, train_set, train_config=train_config, loss_fn=args.loss_fn,
                    progress=not args.json).cpu()


@register_method("kmeans", "adam", 1e-4, 0.0)
def _kmeans(model, args, train_set):
    from ..codebook import WeightShareConfig, round_side_data, weight_share  # lazy: loads when the verb runs

    config = WeightShareConfig(bits=args.bits or 5, conv_bits=args.conv_bits or 8, init=args.init,
                               exclude=_exclude(args), seed=args.seed, layer_bits=_layer_bits(args))
    return round_side_data(_fit(weight_share(model, config), args, train_set), args.side_dtype)


def _product(method):
    def compress(model, args, train_set):
        from ..codebook import PQConfig, product_quantize  # lazy: loads when the verb runs

        config = PQConfig(subvector=args.subvector, bits=args.bits or 6, method=method, exclude=_exclude(args),
                          calib_samples=args.calib_samples, seed=args.seed)
        return _fit(product_quantize(model, config, train_set, progress=not args.json), args, train_set)

    return compress


register_method("pq", "adam", 1e-4, 0.0)(_product("pq"))
register_method("qcnn", "adam", 1e-4, 0.0)(_product("qcnn"))


def _lowrank(method):
    def compress(model, args, train_set):
        from ..lowrank import LowRankConfig, factorize  # lazy: loads when the verb runs

        energy = args.rank_energy if args.rank_energy is not None else (None if args.target_macs else 0.9)
        config = LowRankConfig(method=method, energy=energy, target_macs=args.target_macs, exclude=_exclude(args))
        return _fit(factorize(model, config, input_shape=train_set.input_shape), args, train_set)

    return compress


register_method("svd", "sgd", 0.01, 5e-4)(_lowrank("svd"))
register_method("tucker", "sgd", 0.01, 5e-4)(_lowrank("tucker"))


def _check_method_flags(args) -> None:
    """A method-specific flag given with a method that does not use it is refused, not ignored."""
    for flag, methods in METHOD_FLAGS.items():
        if getattr(args, _dest(flag)) is not None and args.method not in methods:
            names = " or ".join(", ".join(methods).rsplit(", ", 1))
            raise UserError(f"{flag} applies to {names} only, not to --method {args.method}")


def _fill_defaults(args) -> None:
    for dest, value in DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


def _check_args(args) -> None:
    # The ramp length needs the agp schedule as well as the method: its own message first.
    if args.agp_fraction is not None and (args.method != "magnitude" or args.schedule != "agp"):
        raise UserError("--agp-fraction applies to --method magnitude with --schedule agp")
    _check_method_flags(args)
    _fill_defaults(args)
    if args.weight_decay is not None and args.weight_decay < 0:
        raise UserError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.finetune_epochs < 0 or args.calib_samples < 1:
        raise UserError("--finetune-epochs must be >= 0 and --calib-samples >= 1")
    if args.rank_energy is not None and not 0 < args.rank_energy <= 1:
        raise UserError(f"--rank-energy must be in (0, 1], got {args.rank_energy}")
    if not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    for flag, value in (("--bits", args.bits), ("--conv-bits", args.conv_bits)):
        if value is not None and not 1 <= value <= 16:
            raise UserError(f"{flag} must be in 1..16, got {value}")
    if args.subvector < 1:
        raise UserError(f"--subvector must be >= 1, got {args.subvector}")
    if args.agp_fraction is not None and not 0 < args.agp_fraction <= 1:
        raise UserError(f"--agp-fraction must be in (0, 1], got {args.agp_fraction}")
    if (args.temperature is not None or args.alpha is not None) and not (args.distill or args.teacher):
        raise UserError("--temperature and --alpha need --distill or --teacher")
    if args.layer_sparsity and args.scope != "layer":
        raise UserError("--layer-sparsity needs --scope layer")
    _layer_sparsity(args), _layer_bits(args)  # syntax and ranges, before anything is loaded


def _teacher_loss(args, model, input_shape):
    """Distillation from ``--teacher`` (a saved model) or, with ``--distill``, from the input model."""
    if not (args.distill or args.teacher):
        return None
    from .. import load  # lazy: loads when the verb runs

    if not args.teacher:
        return kd_loss_for(args, copy.deepcopy(model))
    return kd_loss_for(args, load(args.teacher), model, input_shape, f"teacher {args.teacher}")


def run(args) -> int:
    import torch  # lazy: loads when the verb runs

    from .. import load, save  # lazy: loads when the verb runs
    from ..export.onnx import float32_size  # lazy: loads when the verb runs
    from ..export.packed import packed_size  # lazy: loads when the verb runs
    from ..profile import count_macs, count_params  # lazy: loads when the verb runs
    from ..sparse import format_sparsity_report, sparsity_report  # lazy: loads when the verb runs
    from ..train import evaluate  # lazy: loads when the verb runs

    _check_args(args)
    check_out_path(args.out)
    torch.manual_seed(args.seed)
    model = load(args.file)
    _check_layer_names(model, args)
    shape = getattr(model, "input_shape", None)
    train_set, test_set = load_data(args, "train", shape), load_data(args, "test", shape)
    input_shape = train_set.input_shape
    check_model_data(model, train_set, args.file, args.data)
    args.loss_fn = _teacher_loss(args, model, input_shape)
    before = evaluate(model, test_set)["top1"]
    began = time.perf_counter()
    source = model
    if args.fold_bn:
        from ..prune.deploy import fold_batchnorm  # lazy: loads when the verb runs

        source = fold_batchnorm(model)
    compressed = COMPRESSORS[args.method][0](source, args, train_set)
    seconds = time.perf_counter() - began
    after = evaluate(compressed, test_set)["top1"]
    record_meta(compressed, compress_weights={"method": args.method, "source": args.file, "teacher": args.teacher},
                top1=after, data=args.data)
    save(compressed, args.out, input_shape=input_shape)
    packed, baseline = packed_size(compressed), float32_size(model)  # against the input model in float32
    report = sparsity_report(compressed)
    result = {
        "method": args.method, "top1_before": before, "top1": after, "params": count_params(compressed),
        "macs_before": count_macs(model, input_shape), "macs": count_macs(compressed, input_shape),
        "sparsity": report["sparsity"], "packed_bytes": packed, "float32_bytes": baseline,
        "compression_ratio": baseline / packed, "seconds": round(seconds, 2), "out": args.out,
    }
    text = (f"{args.method}: top-1 {before:.4f} -> {after:.4f}, MACs {result['macs_before']:,} -> "
            f"{result['macs']:,}, packed {packed:,} B ({baseline / packed:.1f}x smaller than float32), "
            f"sparsity {report['sparsity']:.1%}; saved {args.out} (export it with --format packed)")
    if report["sparsity"] > 0:
        text = format_sparsity_report(report) + "\n" + text
    result["layers"] = report["layers"]
    emit(args, result, text)
    return 0
