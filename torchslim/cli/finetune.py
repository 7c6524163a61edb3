"""``torchslim finetune``: train a saved model further, optionally distilling from a teacher.

The usual step after pruning or factorising: the reshaped model keeps its
architecture (read from the file) and is trained in place.  ``--teacher FILE``
adds the distillation loss of :func:`torchslim.distill.kd_loss_fn`.  Runs under
``torchrun`` like ``train``, and resumes from ``OUT.ckpt`` after an interruption.
"""

from __future__ import annotations

import os
import time

from ..flags.verbs import add_finetune_flags
from .common import check_model_data, check_out_path, emit, kd_loss_for, load_data, training_config


def add_parser(subparsers):
    parser = subparsers.add_parser("finetune", help="train a saved model further (optionally with a teacher)")
    add_finetune_flags(parser)
    parser.set_defaults(run=run)


def _teacher_loss(args, model, train_set):
    if args.teacher is None:
        return kd_loss_for(args, None)
    from .. import load  # lazy: loads when the verb runs

    return kd_loss_for(args, load(args.teacher), model, train_set.input_shape, f"teacher {args.teacher}")


def run(args) -> int:
    from .. import load, save  # lazy: loads when the verb runs
    from ..train import evaluate, fit, init_from_env  # lazy: loads when the verb runs
    from ..train.checkpoint import file_digest  # lazy: loads when the verb runs
    from ..train.distributed import barrier  # lazy: loads when the verb runs

    config = training_config(args)
    check_out_path(args.out)
    model = load(args.file)
    shape = getattr(model, "input_shape", None)
    train_set, test_set = load_data(args, "train", shape), load_data(args, "test", shape)
    check_model_data(model, train_set, args.file, args.data)
    loss_fn = _teacher_loss(args, model, train_set)
    dist_info = init_from_env(args.device)
    top1_before = evaluate(model, test_set)["top1"] if dist_info.is_main else None
    checkpoint = args.out + ".ckpt"
    began = time.perf_counter()
    start = {"start": file_digest(args.file), "teacher": file_digest(args.teacher) if args.teacher else None}
    history = fit(model, train_set, config, checkpoint_path=checkpoint, loss_fn=loss_fn, progress=not args.json,
                  resume_extra=start)
    seconds = time.perf_counter() - began
    if not dist_info.is_main:
        barrier()
        return 0
    model.cpu()
    top1 = evaluate(model, test_set)["top1"]
    save(model, args.out, finetune=config.to_dict(), teacher=args.teacher, top1=top1, data=args.data)
    if os.path.exists(checkpoint):
        os.remove(checkpoint)
    barrier()
    result = {"top1_before": top1_before, "top1_after": top1, "epochs": config.epochs,
              "teacher": args.teacher, "train_seconds": round(seconds, 2), "world_size": dist_info.world_size,
              "history": history["epochs"], "out": args.out}
    emit(args, result, f"fine-tuned {config.epochs} epoch(s){' with a teacher' if args.teacher else ''}: "
                       f"top-1 {top1_before:.4f} -> {top1:.4f} in {seconds:.1f} s; saved {args.out}")
    return 0
