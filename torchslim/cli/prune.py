"""``torchslim prune``: remove channels from a saved model, fine-tune it and measure it."""

from __future__ import annotations

import copy
import os

from ..errors import UserError
from ..checks import check_layer_patterns
from ..flags.compress import add_prune_flags, check_args
from ..nn import record_meta
from .common import check_model_data, check_out_path, emit, kd_loss_for, load_data


def add_parser(subparsers):
    parser = subparsers.add_parser("prune", help="structured channel pruning (really removes channels)")
    add_prune_flags(parser)
    parser.set_defaults(run=run)


def _config(args):
    from ..prune import PruneConfig  # lazy: loads when the verb runs

    check_args(args)
    if getattr(args, "latency_runtime", "torch") == "openvino" and getattr(args, "target_latency", None) is not None:
        from ..export.openvino import require  # lazy: loads when the verb runs

        require("--latency-runtime openvino")  # one line naming the extra, before any work
    return PruneConfig(criterion=args.criterion, ratio=args.ratio, target_macs=args.target_macs,
                       target_params=args.target_params, target_latency=getattr(args, "target_latency", None),
                       latency_runtime=getattr(args, "latency_runtime", "torch"),
                       latency_threads=args.threads or 1, scope=args.scope, min_channels=args.min_channels,
                       round_to=args.round_to, ignored_layers=tuple(args.ignore),
                       calibration_batches=args.calibration_batches, batch_size=min(args.batch_size, 64),
                       seed=args.seed, group_importance=not args.producers_only,
                       recalibrate_bn=not args.no_bn_recalibration)


def _check(args, config, needs_data: bool) -> None:
    if needs_data and not args.data:
        raise UserError(f"--data is needed for criterion {config.criterion!r}, fine-tuning or regularising")


def _train_config(args, epochs: int):
    from ..train import TrainConfig  # lazy: loads when the verb runs

    return TrainConfig(epochs=epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device)


def _load(args, config):
    """The saved model and the train/test splits (checked against the model's input)."""
    from .. import load  # lazy: loads when the verb runs
    from ..prune import get_criterion  # lazy: loads when the verb runs

    needs_data = get_criterion(config.criterion).needs_data or args.finetune_epochs > 0 or bool(args.regularize)
    _check(args, config, needs_data)
    check_out_path(args.out)
    original = load(args.file)
    train_set = test_set = None
    check_layer_patterns(original, args.ignore, "--ignore", args.file)
    if args.data:
        input_shape = getattr(original, "input_shape", None)
        train_set, test_set = load_data(args, "train", input_shape), load_data(args, "test", input_shape)
        check_model_data(original, train_set, args.file, args.data)
    return original, train_set, test_set


def _loss_and_start(args, original, train_set):
    """The fine-tune loss (distillation from the original with --teacher) and the model to
    prune (after the regularised training with --regularize)."""
    from ..prune.regularize import Regularizer, regularized_loss  # lazy: loads when the verb runs
    from ..train import fit  # lazy: loads when the verb runs

    loss_fn = kd_loss_for(args, copy.deepcopy(original) if args.teacher == "original" else None)
    model = original
    if args.regularize:
        model = copy.deepcopy(original)
        regularizer = Regularizer(model, args.regularize, args.lam)
        fit(model, train_set, _train_config(args, args.regularize_epochs), progress=not args.json,
            loss_fn=regularized_loss(regularizer, loss_fn))
        model.cpu()
    return loss_fn, model


def _prune(args, config, model, train_set, test_set, loss_fn):
    """One-shot or iterative pruning with fine-tuning; returns (model, rounds, rounds folder)."""
    from ..prune import prune  # lazy: loads when the verb runs
    from ..prune.schedule import iterative_prune  # lazy: loads when the verb runs
    from ..train import evaluate, fit  # lazy: loads when the verb runs

    def finetune(pruned, round_index, checkpoint):
        if args.finetune_epochs:
            fit(pruned, train_set, _train_config(args, args.finetune_epochs), checkpoint_path=checkpoint,
                loss_fn=loss_fn, progress=not args.json)
            pruned.cpu()

    if args.step_channels or args.rounds:
        folder = args.out + ".rounds"
        pruned, rounds = iterative_prune(model, config, folder, finetune=finetune,
                                         evaluate=lambda m: evaluate(m, test_set)["top1"] if test_set else None,
                                         step_channels=args.step_channels, calibration=train_set,
                                         log=None if args.json else print, rounds=args.rounds)
        return pruned, rounds, folder
    result = prune(model, config, train_set)
    if not args.json:
        print(result.summary())
    checkpoint = args.out + ".finetune.ckpt"
    finetune(result.model, 1, checkpoint)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    config.round_to = result.round_to  # an automatic multiple halved to reach the target
    return result.model, [], None


def _measure(args, config, original, deployed, top1_before, top1_after, rounds) -> dict:
    from ..profile import compare_latency, count_macs, count_params  # lazy: loads when the verb runs
    from ..prune.deploy import fold_batchnorm  # lazy: loads when the verb runs

    shape = tuple(original.input_shape)
    timing = compare_latency({"before": fold_batchnorm(original) if args.fold_bn else original,
                              "after": deployed}, shape, threads=args.threads)
    return {
        "macs_before": count_macs(original, shape), "macs_after": count_macs(deployed, shape),
        "params_before": count_params(original), "params_after": count_params(deployed),
        "top1_before": top1_before, "top1_after": top1_after,
        "latency_ms_before": timing["before"]["median_ms"], "latency_ms_after": timing["after"]["median_ms"],
        "speedup": timing["before"]["median_ms"] / timing["after"]["median_ms"],
        "size_bytes_before": os.path.getsize(args.file), "size_bytes_after": os.path.getsize(args.out),
        "threads": timing["threads"], "rounds": rounds, "out": args.out, "round_to": config.round_to,
        "round_to_auto": config.auto_round_to,
        **_target_latency(config, original, deployed, shape),
    }


def _target_latency(config, original, deployed, shape) -> dict:
    """With --target-latency: the saved model timed against the original on the runtime the
    target was set for (the figures above are eager torch, whatever the target)."""
    if config.target_latency is None:
        return {}
    from ..prune.latency import measure_models_ms  # lazy: loads when the verb runs

    ms = measure_models_ms({"before": original, "after": deployed}, shape, config.latency_runtime,
                           config.latency_threads, repeats=50)
    return {"target_latency": {"runtime": config.latency_runtime, "threads": config.latency_threads,
                               "target": config.target_latency, "before_ms": ms["before"], "after_ms": ms["after"],
                               "share": ms["after"] / ms["before"], "speedup": ms["before"] / ms["after"]}}


def run(args) -> int:
    from .. import save  # lazy: loads when the verb runs
    from ..prune.deploy import fold_batchnorm  # lazy: loads when the verb runs
    from ..prune.schedule import clear_rounds  # lazy: loads when the verb runs
    from ..prune.defaults import describe  # lazy: loads when the verb runs
    from ..train import evaluate, resolve_device  # lazy: loads when the verb runs

    config = _config(args)
    resolve_device(args.device)
    original, train_set, test_set = _load(args, config)
    top1_before = evaluate(original, test_set)["top1"] if test_set is not None else None
    loss_fn, model = _loss_and_start(args, original, train_set)
    pruned, rounds, folder = _prune(args, config, model, train_set, test_set, loss_fn)
    pruned.eval()
    top1_after = evaluate(pruned, test_set)["top1"] if test_set is not None else None
    deployed = fold_batchnorm(pruned) if args.fold_bn else pruned
    record_meta(deployed, original, pruned=config.to_dict(), top1=top1_after, finetune_epochs=args.finetune_epochs,
                teacher=args.teacher, temperature=args.temperature, alpha=args.alpha, regularize=args.regularize,
                bn_folded=bool(args.fold_bn))
    save(deployed, args.out)
    if folder:
        clear_rounds(folder)
    payload = _measure(args, config, original, deployed, top1_before, top1_after, rounds)
    multiple = (describe(config.latency_runtime, config.round_to) if config.auto_round_to
                else str(config.round_to))
    text = (f"channels kept in multiples of {multiple}\n"
            f"MACs {payload['macs_before']:,} -> {payload['macs_after']:,} "
            f"({payload['macs_after'] / payload['macs_before']:.1%}), params {payload['params_before']:,} -> "
            f"{payload['params_after']:,}, latency {payload['latency_ms_before']:.3f} -> "
            f"{payload['latency_ms_after']:.3f} ms ({payload['speedup']:.2f}x, batch 1, interleaved)")
    if "target_latency" in payload:
        t = payload["target_latency"]
        text += (f"\nlatency on {t['runtime']} ({t['threads']} thread(s)) {t['before_ms']:.3f} -> {t['after_ms']:.3f} ms: "
                 f"{t['share']:.3f} of the original against a target of {t['target']:g} ({t['speedup']:.2f}x)")
    if top1_before is not None:
        text += f"\ntop-1 {top1_before:.4f} -> {top1_after:.4f}"
    emit(args, payload, text + f"\nsaved {args.out}")
    return 0
