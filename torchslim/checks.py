"""Checks every verb shares, run before any long work.

- Paths: no output may land on an input (the model, the teacher) or on another output, and
  every output is proved writable by creating its temporary file where the atomic write will
  (``os.access`` says yes to root even under ``/proc``).
- Flags: an option given where it does nothing is refused (:func:`check_applies`), and
  numbers are range-checked by the argparse types below, which recipes reuse.
- Model against data: the same input shape and the same number of classes, before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import math
import os
import re
import tempfile

from .errors import UserError

# Flags whose value is a path the verb writes; and those naming a file it reads (when that file exists).
OUTPUT_DESTS = ("out", "packed", "plot", "teacher_out")
INPUT_DESTS = ("file", "teacher", "model")
SEED_MAX = 2**32 - 1  # numpy's and most tools' range; torch's own seeds are derived from it
THREADS_MAX = 1024


def _flag(dest: str) -> str:
    return "the input file" if dest == "file" else "--" + dest.replace("_", "-")


# ---------------------------------------------------------------- numbers


def int_range(low: int | None = None, high: int | None = None):
    """An argparse ``type``: an integer in [low, high]; recipes read ``kind`` and reuse the check."""

    def parse(text):
        try:
            value = int(str(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be in {_bounds(low, high)}, got {text}")
        return value

    parse.kind, parse.__name__ = "int", "integer"
    return parse


def float_range(low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse ``type``: a finite number in [low, high] (or (low, high] with ``low_open``)."""

    def parse(text):
        try:
            value = float(str(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            left = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be a number in {_bounds(low, high, left)}, got {text}")
        return value

    parse.kind, parse.__name__ = "float", "number"
    return parse


def _bounds(low, high, left: str = "[") -> str:
    low_text = "-inf" if low is None else f"{low:g}" if isinstance(low, float) else str(low)
    high_text = "inf)" if high is None else (f"{high:g}" if isinstance(high, float) else str(high)) + "]"
    return f"{left if low is not None else '('}{low_text}, {high_text}"


SEED = int_range(0, SEED_MAX)
POSITIVE_INT = int_range(1)
NONNEG_INT = int_range(0)
THREADS = int_range(1, THREADS_MAX)
WIDTH = float_range(0, 64, low_open=True)


# ---------------------------------------------------------------- flags that do nothing


def given_dests(parser: argparse.ArgumentParser, argv: list) -> set:
    """The dests the command line set, as opposed to those argparse filled in from defaults."""
    unset = object()
    appending = (argparse._AppendAction, argparse._CountAction, argparse._AppendConstAction)
    plain = [a for a in parser._actions if a.dest != argparse.SUPPRESS and not isinstance(a, appending)]
    namespace = argparse.Namespace(**{a.dest: unset for a in plain})
    parser.parse_known_args(list(argv), namespace=namespace)
    given = {a.dest for a in plain if getattr(namespace, a.dest) is not unset}
    return given | {a.dest for a in parser._actions if isinstance(a, appending)
                    and getattr(namespace, a.dest, a.default) != a.default}


def check_applies(args, given: set) -> None:
    """``args.applies`` maps a flag to (dest, values): the flag does something only when ``dest`` is
    one of ``values``.  A flag given anyway is an error naming where it applies."""
    for flag, (dest, values) in (getattr(args, "applies", None) or {}).items():
        own = next((d for d in given if "--" + d.replace("_", "-") == flag), None)
        if own is None and flag.startswith("--no-"):  # a store_false flag shares the positive dest
            own = next((d for d in given if "--no-" + d.replace("_", "-") == flag), None)
        if own is not None and getattr(args, dest) not in values:
            choices = " or ".join(str(v) for v in values)
            raise UserError(f"{flag} applies to --{dest.replace('_', '-')} {choices} only, "
                            f"not to --{dest.replace('_', '-')} {getattr(args, dest)}")


def check_layer_patterns(model, patterns, flag: str, source: str) -> None:
    """Every name or glob in ``patterns`` must match a layer of ``model`` (or a layer inside one)."""
    names = [name for name, _ in model.named_modules() if name]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".") for n in names):
            shown = ", ".join(names[:24]) + (f", ... ({len(names)} in all)" if len(names) > 24 else "")
            raise UserError(f"{flag} {pattern!r} matches no layer of {source}; layers: {shown}")


# ---------------------------------------------------------------- paths


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return False


def _inside(path: str, folder: str) -> bool:
    folder = os.path.realpath(folder)
    return os.path.realpath(path).startswith(folder.rstrip(os.sep) + os.sep)


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def probe_writable(path: str, flag: str, folder: bool = False) -> None:
    """Create (and remove) the temporary file an atomic write of ``path`` would create, so an
    unwritable output fails now rather than after the work."""
    target = os.path.abspath(path)
    if folder and os.path.exists(target) and not os.path.isdir(target):
        raise UserError(f"{flag} {path} is a file; give a folder (the run writes several files into it)")
    if not folder and os.path.isdir(target):
        raise UserError(f"{flag} {path} is a folder; give a file name such as model.safetensors")
    where = _nearest_existing(target if folder else os.path.dirname(target))
    if not os.path.isdir(where):
        raise UserError(f"cannot write {flag} {path}: {where} is not a folder")
    try:
        handle, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(target) + ".", dir=where)
        os.close(handle)
        os.remove(tmp)
    except OSError as exc:
        raise UserError(f"cannot write {flag} {path} ({exc.strerror or exc}); choose a writable folder") from None


def remove_stale_temporaries(path: str) -> list[str]:
    """Remove the temporary files an atomic write of ``path`` (or of its ``.ckpt`` companions) left
    when a run was killed; they are ours by name and never a finished file."""
    folder = os.path.dirname(os.path.abspath(path))
    pattern = re.compile(r"\.tmp-" + re.escape(os.path.basename(path)) + r"(\.[A-Za-z0-9_.-]+)?\.[a-z0-9_]{8}$")
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if pattern.match(name) and os.path.isfile(os.path.join(folder, name)):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


def check_paths(args) -> None:
    """No output onto an input or onto another output; every output writable (see module doc)."""
    out_folder = getattr(args, "out_is_folder", False)
    outputs = [(d, getattr(args, d)) for d in OUTPUT_DESTS if isinstance(getattr(args, d, None), str)]
    inputs = [(d, getattr(args, d)) for d in INPUT_DESTS
              if isinstance(getattr(args, d, None), str) and os.path.isfile(getattr(args, d))]
    for index, (dest, path) in enumerate(outputs):
        for in_dest, in_path in inputs:
            if _same_file(path, in_path):
                raise UserError(f"{_flag(dest)} {path} is {_flag(in_dest)}: it would be overwritten; "
                                "write the result to another file")
            if out_folder and dest == "out" and _inside(in_path, path):
                raise UserError(f"{_flag(in_dest)} {in_path} is inside --out {path}, which the run writes "
                                "into; copy it elsewhere or choose another --out")
        for other_dest, other in outputs[index + 1:]:
            if _same_file(path, other):
                raise UserError(f"{_flag(dest)} and {_flag(other_dest)} both name {path}; give two different files")
    for dest, path in outputs:
        probe_writable(path, _flag(dest), folder=out_folder and dest == "out")
        if not (out_folder and dest == "out") and os.environ.get("RANK", "0") == "0":
            remove_stale_temporaries(path)


# ---------------------------------------------------------------- model against data


def _shape(shape) -> str:
    return "x".join(str(s) for s in shape)


def _shape_hint(model_shape, data_shape) -> str:
    if tuple(model_shape[1:]) == (32, 32) and model_shape[0] == 3 and tuple(data_shape) != tuple(model_shape):
        return "; the -32 variants (fashion-mnist-32, mnist-32, digits-32) give 3x32x32 images"
    if data_shape[-1] < 32 and model_shape[-1] >= 32:
        return "; CIFAR-shaped nets need 32x32 input, e.g. --data fashion-mnist-32"
    return ""


def check_fits_data(model, dataset, model_name: str, data_name: str = ""):
    """One line, before any work, when ``model`` cannot take ``dataset``'s images or predicts
    another number of classes than it has; returns the dry run's logits."""
    import torch  # lazy: the command-line parser loads this module without torch

    source = f" from {data_name}" if data_name else ""
    recorded = tuple(getattr(model, "input_shape", ()) or ())
    data_shape = tuple(dataset.input_shape)
    if recorded and recorded != data_shape:
        raise UserError(f"{model_name} cannot take input {_shape(data_shape)}{source}: it takes "
                        f"{_shape(recorded)} images{_shape_hint(recorded, data_shape)}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, *data_shape))
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:160]
        raise UserError(f"{model_name} cannot take input {_shape(data_shape)}{source} ({first})"
                        f"{_shape_hint(recorded or (3, 32, 32), data_shape)}") from None
    finally:
        model.train(was_training)
    classes = logits.shape[-1] if logits.ndim == 2 else None
    if classes != dataset.num_classes:
        raise UserError(f"{model_name} predicts {classes} classes but {data_name or 'the data'} has "
                        f"{dataset.num_classes}; use the data set the model was trained for")
    return logits


def require_images(dataset, split: str, data_name: str) -> None:
    """A split with no images (a folder with too few per class) is an error, not a division by zero."""
    if len(dataset.labels) == 0:
        raise UserError(f"{data_name} has no images in its {split} split; a folder needs at least 3 images "
                        "per class for the 80/20 split, or its own train/ and test/ sub-folders")


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def create_model(name: str, flag: str = "--width-mult", build: bool = True, **kwargs):
    """``models.create``, after building the model on the meta device to count its parameters:
    a width that needs more than a quarter of this machine's memory for float32 weights (training
    needs about four times that) is refused before anything is allocated."""
    import torch  # lazy: the command-line parser loads this module without torch

    from . import models  # lazy: the model zoo loads only when a model is made

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the real weights draw the same numbers
            probe = models.create_for_data(name, **kwargs)
        params = sum(p.numel() for p in probe.parameters())
    except UserError:
        raise
    except Exception:  # a builder the meta device cannot run: build for real, as before
        params = 0
    memory = _memory_bytes()
    if memory and params * 4 > memory // 4:
        raise UserError(f"{name} at {flag} {kwargs.get('width_mult', 1.0):g} has {params:.3g} parameters "
                        f"({params * 4 / 2**30:,.1f} GiB of float32 weights); this machine has "
                        f"{memory / 2**30:.0f} GiB: choose a smaller {flag}")
    return models.create_for_data(name, **kwargs) if build else None
