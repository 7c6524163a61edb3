"""The recipe schema, derived from the verbs' flags so recipes and the CLI stay one vocabulary.

Each stage maps onto one CLI verb.  Its options are that verb's flags with
underscores (``--target-macs`` -> ``target_macs``); their types, choices and
defaults are read from the verb's parser (:mod:`torchslim.flags`), so a flag added to a verb is
a recipe option at once.  Ranges and the choices a verb checks only at run time
are added here, so a recipe is fully checked before anything runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
from functools import lru_cache

from .. import flags
from ..errors import UserError, unknown_choice


@dataclasses.dataclass(frozen=True)
class Option:
    """One recipe option: the flag it becomes and how its value is checked."""

    key: str
    flag: str | None  # None: handled by the pipeline, not passed to the verb
    kind: str  # "bool", "int", "float", "str", "list"
    choices: tuple = ()
    default: object = None
    help: str = ""
    store: str = "value"  # "value", "true", "false", "append"
    parse: object = None  # the verb's range-checking argparse type (torchslim/checks.py), if it has one


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A recipe stage: the verb it runs and the options it accepts."""

    name: str
    verb: str | None
    summary: str
    managed: tuple = ("file", "out", "json")  # flags the pipeline sets itself
    extra: tuple = ()  # pipeline-level options (Option)
    restrict: tuple = ()  # (key, allowed choices): narrower than the verb's
    distributed: bool = False  # runs under torchrun with nproc_per_node > 1


# Inclusive or exclusive numeric bounds: (low, low_inclusive, high, high_inclusive).
_POS = (0, False, None, False)
_NONNEG = (0, True, None, False)
_FRACTION = (0, False, 1, True)  # (0, 1]
_UNIT = (0, True, 1, True)  # [0, 1]
_REMOVE = (0, True, 1, False)  # [0, 1)
RANGES = {
    "epochs": _NONNEG, "finetune_epochs": _NONNEG, "regularize_epochs": _NONNEG, "step_channels": _NONNEG,
    "batch_size": (1, True, None, False), "lr": _POS, "weight_decay": _NONNEG, "label_smoothing": _REMOVE,
    "width_mult": _POS, "teacher_width": _POS, "target_macs": _FRACTION, "target_params": _FRACTION,
    "target_latency": _FRACTION,
    "rank_energy": _FRACTION, "ratio": _REMOVE, "sparsity": _REMOVE, "lambda": _POS, "temperature": _POS,
    "alpha": _UNIT, "hint_weight": _NONNEG, "min_channels": (1, True, None, False),
    "round_to": (1, True, None, False), "calibration_batches": (1, True, None, False),
    "calib": (1, True, None, False), "calib_samples": (1, True, None, False),
    "weight_bits": (1, True, 8, True), "act_bits": (1, True, 8, True), "bits": (1, True, 16, True),
    "conv_bits": (1, True, 16, True), "subvector": (1, True, None, False), "subset": (1, True, None, False),
    "holdout": _NONNEG, "seed": (0, True, 2**32 - 1, True), "threads": (1, True, None, False), "opset": lambda: _opset_bounds(),
    "nproc_per_node": (1, True, 64, True), "num_classes": (1, True, None, False),
}



def _opset_bounds() -> tuple:
    """The exporter's own range, so a recipe is refused at planning, not at its last stage."""
    from ..export.onnx import supported_opsets  # lazy: heavy: loads when a run needs it

    opsets = supported_opsets()
    return (opsets.start, True, opsets.stop - 1, True)


_DATA = Option("data", "--data", "str", help="data set for this stage (default: the recipe's)")
_NPROC = Option("nproc_per_node", None, "int", default=1, help="processes for DDP training under torchrun")
_TEACHER = Option("teacher", None, "str", help="'original' (the model before compression), "
                  "'previous' (the stage's input) or a saved model file")

STAGES: dict[str, StageSpec] = {spec.name: spec for spec in (
    StageSpec("train", "train", "train a zoo model from scratch", managed=("out", "json"),
              distributed=True, extra=(_NPROC,)),
    StageSpec("load", None, "start from a saved model, or import one from a source",
              extra=(Option("file", None, "str", help="a model saved by torchslim (or give --model)"),
                     Option("source", None, "str", help="instead of file: torchvision:NAME, timm:NAME, zoo:NAME "
                            "or PKG.MODULE:CALLABLE, imported with `torchslim import` (head and input from the data)"),
                     Option("weights", "--weights", "str", help="with source: its state dict (.pt/.pth/.safetensors)"),
                     Option("num_classes", "--num-classes", "int", help="with source: classes (default: the data's)"),
                     Option("input", "--input", "str", help="with source: CxHxW (default: the data's)"),
                     Option("options", "--options", "str", help="with source: the builder's options as JSON"))),
    StageSpec("prune", "prune", "structured channel pruning"),
    StageSpec("finetune", "finetune", "train the current model further", managed=("file", "out", "json", "teacher"),
              distributed=True, extra=(_NPROC, _TEACHER)),
    StageSpec("quantize", "quantize", "binary / ternary / low-bit quantization",
              managed=("file", "out", "json", "packed", "teacher"), extra=(_TEACHER,),
              # int8 writes an ONNX Runtime model, which no later stage and no report can take
              restrict=(("method", lambda: tuple(m for m in _runtime_choices("quantize", "method")
                                                 if m != "int8")),)),
    StageSpec("compress_weights", "compress-weights", "sparsity, weight sharing, PQ or Q-CNN",
              managed=("file", "out", "json", "teacher"), extra=(_TEACHER,),
              restrict=(("method", ("kmeans", "magnitude", "pq", "qcnn")),)),
    StageSpec("lowrank", "compress-weights", "low-rank factorisation (SVD or Tucker-2)",
              managed=("file", "out", "json", "teacher"), extra=(_TEACHER,),
              restrict=(("method", ("svd", "tucker")),)),
    StageSpec("distill", "distill", "train a small student from the current model",
              managed=("out", "json", "teacher", "teacher_out"), distributed=True, extra=(_NPROC, _TEACHER)),
    StageSpec("export", "export", "write the packed or ONNX file"),
)}

# Choices that verbs only check at run time (their flags take free text):
# (verb, key) -> (module, attribute); a callable attribute is called.
_RUNTIME_CHOICES = {
    ("prune", "criterion"): ("torchslim.prune", "list_criteria"),
    ("prune", "scope"): ("torchslim.prune", "SCOPES"),
    ("quantize", "method"): ("torchslim.flags.verbs", "QUANTIZE_METHODS"),
    ("train", "model"): ("torchslim.models", "list_models"),
    ("distill", "student"): ("torchslim.models", "list_models"),
    ("distill", "loss"): ("torchslim.distill", "list_losses"),
    ("compress-weights", "schedule"): ("torchslim.sparse.schedule", "SCHEDULES"),
    ("compress-weights", "scope"): ("torchslim.sparse.magnitude", "SCOPES"),
    ("compress-weights", "init"): ("torchslim.codebook.kmeans", "INITS"),
}
for _verb in ("train", "finetune", "distill"):  # the verbs with the shared training flags
    _RUNTIME_CHOICES[(_verb, "optimizer")] = ("torchslim.train.config", "OPTIMIZERS")
    _RUNTIME_CHOICES[(_verb, "schedule")] = ("torchslim.train.config", "SCHEDULES")


# Options that name a model: a zoo name from the list, or a torchvision:/timm:/PKG.MODULE:CALLABLE source.
_SOURCE_OPTIONS = {("train", "model"), ("distill", "student")}


def _names_source(stage: str, key: str, value) -> bool:
    """Whether ``value`` is a model source other than a bare zoo name (checked when the model is built)."""
    if (stage, key) not in _SOURCE_OPTIONS or not isinstance(value, str) or ":" not in value:
        return False
    from ..models.sources import parse_source, split_options  # lazy: heavy: loads torch

    try:
        return parse_source(split_options(value)[0]).kind != "zoo"
    except UserError:
        return False


def _runtime_choices(verb: str | None, key: str) -> tuple:
    where = _RUNTIME_CHOICES.get((verb, key))
    if where is None:
        return ()
    value = getattr(importlib.import_module(where[0]), where[1])
    return tuple(value() if callable(value) else value)


@lru_cache(maxsize=None)
def verb_parser(verb: str) -> argparse.ArgumentParser:
    """The verb's argparse parser, built once (read-only: dry runs build their own, see plan.py)."""
    return flags.verb_parser(verb)


def _kind(action) -> tuple[str, str]:
    if isinstance(action, argparse._StoreTrueAction):
        return "bool", "true"
    if isinstance(action, argparse._StoreFalseAction):
        return "bool", "false"
    if isinstance(action, argparse._AppendAction):
        return "list", "append"
    kind = getattr(action.type, "kind", None) or {int: "int", float: "float"}.get(action.type, "str")
    return kind, "value"


@lru_cache(maxsize=None)
def stage_options(name: str) -> dict[str, Option]:
    """Every option of stage ``name``, keyed by its recipe name."""
    spec = STAGES[name]
    options: dict[str, Option] = {}
    if spec.verb is not None:
        for action in verb_parser(spec.verb)._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings or action.dest in spec.managed:
                continue
            kind, store = _kind(action)
            # A store_false flag (--no-keep-first-last) shares its dest with the true one: one bool key.
            key = action.dest if kind == "bool" else max(action.option_strings, key=len).lstrip("-").replace("-", "_")
            if key in options:
                continue
            flag = max(action.option_strings, key=len)
            if store == "false":
                true_flag = next((a for a in verb_parser(spec.verb)._actions
                                  if a.dest == action.dest and isinstance(a, argparse._StoreTrueAction)), None)
                flag, store = (max(true_flag.option_strings, key=len), "true") if true_flag else (flag, store)
            parse = action.type if getattr(action.type, "kind", None) else None
            options[key] = Option(key, flag, kind, tuple(action.choices or ()), action.default, action.help or "",
                                  store, parse)
    for option in spec.extra:
        options[option.key] = option
    options.pop("data", None)
    options["data"] = _DATA
    return options


def choices_for(stage: str, option: Option) -> tuple:
    """The valid values of ``option`` (empty when any value of its type goes)."""
    restricted = dict(STAGES[stage].restrict).get(option.key)
    if restricted:
        return tuple(restricted() if callable(restricted) else restricted)
    if option.choices:
        return tuple(option.choices)
    return _runtime_choices(STAGES[stage].verb, option.key)


def _type_name(kind: str) -> str:
    return {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
            "list": "a list of strings"}[kind]


def check_value(stage: str, option: Option, value) -> str | None:
    """None if ``value`` suits ``option``, else the reason (without the location)."""
    kind = option.kind
    if kind == "list":
        values = value if isinstance(value, list) else None
        if values is None or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            return f"{option.key} must be {_type_name(kind)}, got {value!r}"
        return None
    ok = {"bool": isinstance(value, bool),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
          "str": isinstance(value, (str, int, float)) and not isinstance(value, bool)}[kind]
    if not ok:
        return f"{option.key} must be {_type_name(kind)}, got {value!r}"
    choices = () if _names_source(stage, option.key, value) else choices_for(stage, option)
    if choices and str(value) not in {str(c) for c in choices}:

        if str(value) in {str(c) for c in _runtime_choices(STAGES[stage].verb, option.key)}:
            return (f"{option.key} {value} cannot be used in a {stage} stage (its result is no model for the "
                    f"next stages); choose from: {', '.join(str(c) for c in choices)}")
        return str(unknown_choice(f"{option.key} value", str(value), [str(c) for c in choices]))
    if option.parse is not None:  # the verb's own range (seeds, threads, widths, ...)
        try:
            option.parse(str(value))
        except argparse.ArgumentTypeError as exc:
            return f"{option.key} {exc}"
    bounds = RANGES.get(option.key)
    bounds = bounds() if callable(bounds) else bounds  # a range only known at run time
    if bounds and kind in ("int", "float"):
        low, low_in, high, high_in = bounds
        bad_low = low is not None and (value < low if low_in else value <= low)
        bad_high = high is not None and (value > high if high_in else value >= high)
        if bad_low or bad_high:
            return f"{option.key} must be in {_interval(bounds)}, got {value!r}"
    return None


def _interval(bounds) -> str:
    low, low_in, high, high_in = bounds
    left = ("[" if low_in else "(") + f"{low:g}"
    right = (f"{high:g}" + ("]" if high_in else ")")) if high is not None else "inf)"
    return f"{left}, {right}"


def to_argv(stage: str, options: dict) -> list[str]:
    """The verb's command-line flags for the verb-level ``options`` of a stage."""
    table = stage_options(stage)
    argv: list[str] = []
    for key, value in options.items():
        option = table[key]
        if option.flag is None:
            continue
        if option.store == "true":
            if value:
                argv.append(option.flag)
            else:
                negative = "--no-" + option.flag[2:]
                if any(negative in a.option_strings for a in verb_parser(STAGES[stage].verb)._actions):
                    argv.append(negative)
        elif option.store == "false":
            if not value:
                argv.append(option.flag)
        elif option.store == "append":
            for item in value:
                argv += [option.flag, str(item)]
        else:
            argv += [option.flag, str(value)]
    return argv
