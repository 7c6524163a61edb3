"""``torchslim distill``: train a lightweight student from a saved teacher (or with one, online)."""

from __future__ import annotations

import copy
import os
import time

from ..errors import UserError
from ..checks import create_model
from ..flags.verbs import add_distill_flags
from .common import check_model_data, check_out_path, emit, load_data, training_config


def add_parser(subparsers):
    parser = subparsers.add_parser("distill", help="train a small student from a teacher's soft outputs")
    add_distill_flags(parser)
    parser.set_defaults(run=run)


def _shape(shape) -> str:
    return "x".join(map(str, shape))


def _shaped(train_set, width_mult: float) -> dict:
    """``create_model`` arguments that shape a fresh model for the data set."""
    channels, height, width = train_set.input_shape
    return dict(num_classes=train_set.num_classes, in_channels=channels, width_mult=width_mult,
                input_size=(height, width))


def _teacher_file(args):
    """The saved teacher, read before the data so an image folder takes its input size."""
    from .. import load  # lazy: loads when the verb runs
    from ..models.sources import is_source  # lazy: loads when the verb runs

    if args.online and not os.path.exists(args.teacher) and is_source(args.teacher):
        return None
    return load(args.teacher)


def _load_teacher(args, train_set, teacher):
    if teacher is None:  # --online from a source: a fresh model shaped for the data
        return create_model(args.teacher, "--teacher-width", **_shaped(train_set, args.teacher_width))
    classes = (getattr(teacher, "torchslim_arch", {}) or {}).get("kwargs", {}).get("num_classes")
    if classes is not None and classes != train_set.num_classes:
        raise UserError(f"teacher {args.teacher} predicts {classes} classes but {args.data} has "
                        f"{train_set.num_classes}; distil on the data the teacher was trained for")
    expected = tuple(getattr(teacher, "input_shape", ()) or ())
    if expected and expected != tuple(train_set.input_shape):
        raise UserError(f"teacher {args.teacher} expects input {_shape(expected)} but {args.data} gives "
                        f"{_shape(train_set.input_shape)}")
    return teacher


def _make_student(args, teacher, train_set):
    from .. import load, models  # lazy: loads when the verb runs
    from ..distill import create_student, thin_student  # lazy: loads when the verb runs

    if os.path.isfile(args.student):  # a saved model (a pruned copy of the teacher, say) trained further
        student = load(args.student)
        check_model_data(student, train_set, args.student, args.data)
        return student
    if args.student == (getattr(teacher, "torchslim_arch", None) or {}).get("name"):
        return thin_student(teacher, args.width_mult)
    if args.student in models.list_models():
        return create_student(args.student, teacher, width_mult=args.width_mult,
                              num_classes=train_set.num_classes, input_shape=train_set.input_shape)
    if not models.sources.is_source(args.student):
        from ..errors import unknown_choice  # lazy: loads when the verb runs

        raise unknown_choice("student model", args.student, models.list_models())
    student = create_model(args.student, **_shaped(train_set, args.width_mult))
    check_model_data(student, train_set, args.student, args.data)
    return student


def run(args) -> int:
    import torch  # lazy: loads when the verb runs

    from .. import save  # lazy: loads when the verb runs
    from ..distill import DistillConfig, distill, train_online  # lazy: loads when the verb runs
    from ..profile import count_macs, count_params  # lazy: loads when the verb runs
    from ..train import evaluate, fit  # lazy: loads when the verb runs

    kd = DistillConfig(temperature=args.temperature, alpha=args.alpha, loss=args.loss, cache_dir=args.cache_dir,
                       hints=tuple(args.hint), hint_weight=args.hint_weight)
    config = training_config(args)
    if args.online and (args.cache_dir or args.hint):
        raise UserError("--cache-dir and --hint do not apply to --online (the teacher changes every step)")
    if args.teacher_out and not args.online:
        raise UserError("--teacher-out needs --online (an offline teacher is never changed)")
    check_out_path(args.out)
    teacher = _teacher_file(args)
    shape = tuple(getattr(teacher, "input_shape", ()) or ()) or None
    train_set, test_set = load_data(args, "train", input_shape=shape), load_data(args, "test", input_shape=shape)
    teacher = _load_teacher(args, train_set, teacher)
    torch.manual_seed(args.seed)
    initial = _make_student(args, teacher, train_set)
    progress = not args.json
    began = time.perf_counter()
    checkpoint = args.out + ".ckpt"
    trained = (train_online if args.online else distill)(initial, kd, train_set, teacher=teacher, train_config=config,
                                                          checkpoint_path=checkpoint, progress=progress)
    student, teacher, history = trained.model, trained.teacher or teacher, trained.history
    seconds = time.perf_counter() - began
    device = config.device
    result = {
        "top1_student_kd": evaluate(student, test_set, device=device)["top1"],
        "top1_teacher": evaluate(teacher.to(device), test_set, device=device)["top1"],
    }
    if args.compare:
        alone = copy.deepcopy(initial)
        fit(alone, train_set, config, checkpoint_path=args.out + ".alone.ckpt", progress=progress)
        result["top1_student_alone"] = evaluate(alone, test_set, device=device)["top1"]
    save(student.cpu(), args.out, data=args.data, train=config.to_dict(), distill=kd.to_dict(),
         teacher=os.path.abspath(args.teacher) if os.path.exists(args.teacher) else args.teacher,
         online=args.online, top1=result["top1_student_kd"],
         input_shape=train_set.input_shape, num_classes=train_set.num_classes)
    if args.teacher_out:
        save(teacher.cpu(), args.teacher_out, data=args.data, train=config.to_dict(), top1=result["top1_teacher"],
             input_shape=train_set.input_shape, num_classes=train_set.num_classes)
    for path in (checkpoint, args.out + ".alone.ckpt"):
        if os.path.exists(path):
            os.remove(path)
    result.update({
        "student": args.student, "width_mult": args.width_mult, "loss": kd.loss, "temperature": kd.temperature,
        "alpha": kd.alpha, "online": args.online, "epochs": config.epochs, "train_seconds": round(seconds, 2),
        "params_student": count_params(student), "params_teacher": count_params(teacher.cpu()),
        "macs_student": count_macs(student, train_set.input_shape), "out": args.out,
        "cache": history.get("cache"),
    })
    text = (f"{args.student} (width {args.width_mult}) distilled with {kd.loss} (T={kd.temperature:g}, "
            f"alpha={kd.alpha:g}{', online' if args.online else ''}): top-1 {result['top1_student_kd']:.4f}; "
            f"teacher {result['top1_teacher']:.4f}")
    if args.compare:
        gain = 100 * (result["top1_student_kd"] - result["top1_student_alone"])
        text += f"; alone {result['top1_student_alone']:.4f} ({gain:+.2f} points with the teacher)"
    emit(args, result, text + f"; saved {args.out}")
    return 0
