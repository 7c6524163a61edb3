"""Pieces every CLI verb shares: data/model flags, shape parsing, JSON output."""

from __future__ import annotations

import json
import sys

from ..errors import UserError
from ..checks import (NONNEG_INT, POSITIVE_INT, SEED, check_fits_data, float_range, probe_writable,
                     require_images)


def parse_shape(text: str) -> tuple[int, ...]:
    """``"3x32x32"`` -> ``(3, 32, 32)``."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"--input must look like CxHxW with positive sizes, e.g. 3x32x32 (got {text!r})")
    return shape






def data_options(args, name: str, input_shape=None) -> dict:
    """The data set options the image flags ask for; ``input_shape`` (a model's) sets the default size."""
    size, bad = getattr(args, "image_size", None), getattr(args, "bad_images", None)
    if name != "folder":
        if size is not None or bad is not None:
            flag = "--image-size" if size is not None else "--bad-images"
            raise UserError(f"{flag} applies to --data folder:DIR only; {name} has a fixed format")
        return {}
    options = {"bad_images": bad or "error"}
    if size is not None or input_shape:
        options["image_size"] = size if size is not None else int(input_shape[-1])
    if input_shape and int(input_shape[0]) == 1:
        options["grayscale"] = True
    return options


def _normalised(args, dataset):
    """``dataset`` with --mean/--std in place of its own statistics (either flag alone keeps the other)."""
    from ..data.preprocess import parse_stats, with_normalization  # lazy: loads when the verb runs

    mean, std = getattr(args, "mean", None), getattr(args, "std", None)
    if mean is None and std is None:
        return dataset
    mean = parse_stats(mean, "--mean") if mean is not None else dataset.mean
    std = parse_stats(std, "--std") if std is not None else dataset.std
    return with_normalization(dataset, mean, std)






def kd_loss_for(args, teacher, student=None, input_shape=None, teacher_name: str = "the teacher"):
    """The distillation loss of ``teacher`` with ``--temperature``/``--alpha``; None without a teacher.

    Given the ``student`` and the data's ``input_shape``, first checks with one dry run each that the
    teacher takes that input and predicts the student's classes, so a mismatch fails before training.
    """
    if teacher is None:
        if args.temperature is not None or args.alpha is not None:
            raise UserError("--temperature and --alpha need --teacher")
        return None
    from ..distill import kd_loss_fn  # lazy: loads when the verb runs

    if student is not None:
        check_teacher_fits(teacher, student, input_shape, teacher_name, getattr(args, "data", ""))

    return kd_loss_fn(teacher, temperature=args.temperature, alpha=args.alpha)


def training_config(args):
    """The TrainConfig that :func:`add_training_args` flags describe."""
    from ..train import TrainConfig  # lazy: loads when the verb runs

    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        schedule=args.schedule, weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
        augment=not args.no_augment, seed=args.seed, device=args.device,
    )




def load_data(args, split: str, input_shape=None):
    """The split named by --data; --subset limits the training images, and the test images only when it is
    smaller than the test split (a 20,000-image budget still evaluates on all 10,000 test images).
    ``input_shape`` (the model's, when known) gives an image folder its default size and channels."""
    from ..data import load_dataset, parse_data_arg  # lazy: loads when the verb runs

    name, root = parse_data_arg(args.data)
    options = data_options(args, name, input_shape)
    if split == "train" or args.subset is None:
        dataset = load_dataset(name, split=split, root=root, holdout=args.holdout, subset=args.subset, **options)
    else:
        full = load_dataset(name, split=split, root=root, holdout=args.holdout, **options)
        dataset = full.subset(args.subset) if args.subset < len(full) else full
    require_images(dataset, split, args.data)
    return _normalised(args, dataset)


def check_model_data(model, dataset, model_name: str, data_name: str = ""):
    """The shared model-against-data check (input shape and classes); see :mod:`.checks`."""
    return check_fits_data(model, dataset, model_name, data_name)


def check_out_path(path: str, flag: str = "--out") -> None:
    """Fail before any work if ``path`` cannot be written (see :func:`.checks.probe_writable`)."""
    probe_writable(path, flag)


def emit(args, payload: dict, text: str = "") -> None:
    """Print the human-readable text, then (with --json) one JSON line last."""
    if text:
        print(text)
    if getattr(args, "json", False):
        sys.stdout.flush()
        print(json.dumps(payload, sort_keys=True))


def check_input_fits(model, input_shape, model_name: str, data_name: str = ""):
    """A dry run, so a shape mismatch is a one-line error rather than a traceback; returns the output."""
    import torch  # lazy: loads when the verb runs

    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(1, *input_shape))
    except RuntimeError as exc:
        source = f" from {data_name}" if data_name else ""
        hint = "; CIFAR-shaped nets need 32x32 input, e.g. --data fashion-mnist-32" if input_shape[-1] < 32 else ""
        first = str(exc).splitlines()[0][:160]
        raise UserError(f"model {model_name} cannot take input {'x'.join(map(str, input_shape))}{source} "
                        f"({first}){hint}") from None


def check_teacher_fits(teacher, student, input_shape, teacher_name: str, data_name: str = "") -> None:
    """One-line errors, before any training, for a teacher that cannot take the data's input or
    predicts another number of classes than the student."""
    from ..distill.teacher import check_same_classes  # lazy: loads when the verb runs

    theirs = check_input_fits(teacher, input_shape, teacher_name, data_name)
    ours = check_input_fits(student, input_shape, "being trained", data_name)
    check_same_classes(theirs.shape, ours.shape, teacher_name)
