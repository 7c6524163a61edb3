"""Everything about a run that can be known before its first stage, checked before anything is written.

- Stage order: exports write the deployable files of the final model, so they come last.
- Data: every data set a stage names exists and has images in both splits (with ``--quick``'s subset).
- Shapes and classes: the starting model (a ``load`` file, ``--model``, or the ``train`` stage's zoo
  model) takes every stage's images and predicts their number of classes; so does every teacher file.
- The output folder: empty, new, or a resumable run of the same recipe (``--force`` to write anyway).

Errors name the user's own files (``--model base.onnx``), never the run's internal copies.
"""

from __future__ import annotations

import json
import os
import re

import torch

from .. import load, models
from ..checks import check_fits_data, create_model, require_images
from ..data import load_dataset, parse_data_arg
from ..errors import UserError
from .finish import ARTEFACTS
from .recipe import Recipe
from .runner import RUN_FILE
_TEMPORARY = re.compile(r"\.tmp-.+\.[a-z0-9_]{8}$")
_STAGE_FOLDER = re.compile(r"\d{2}-[a-z_]+$")
_OURS = {".lock", RUN_FILE, "stages", *ARTEFACTS.values()}


def check_order(recipe: Recipe, stages: list) -> None:
    exported = None
    for stage in stages:
        if stage.name == "export":
            exported = exported or stage
        elif exported is not None:
            raise UserError(f"{recipe.path}:{stage.line}: stage {stage.index} ({stage.name}) comes after the "
                            f"export in stage {exported.index}; an export writes the final model's file, so "
                            "exports must be the last stages")


def _data_sets(recipe: Recipe, stage_data: str, quick: bool, cache: dict):
    """The train and test splits a stage will see (cached per data name)."""
    if stage_data not in cache:
        name, root = parse_data_arg(stage_data)
        subset = recipe.quick.get("subset") if quick else None
        splits = []
        for split in ("train", "test"):
            dataset = load_dataset(name, split, root=root, subset=subset)
            require_images(dataset, split, stage_data)
            splits.append(dataset)
        cache[stage_data] = tuple(splits)
    return cache[stage_data]


def _load_model(path: str, role: str):
    try:
        return load(path)
    except UserError as exc:
        raise UserError(str(exc) if path in str(exc) else f"{role} {path}: {exc}") from None
    except Exception as exc:  # any unreadable file is the user's input, named as they gave it
        raise UserError(f"{role} {path} is not a model torchslim can read ({type(exc).__name__})") from None


def _zoo_model(stage, train_set):
    """The train stage's model, built on the meta device (no memory), checked against the data."""
    argv = stage.argv
    name = argv[argv.index("--model") + 1]
    width = float(argv[argv.index("--width-mult") + 1]) if "--width-mult" in argv else 1.0
    channels, height, width_px = train_set.input_shape
    kwargs = dict(num_classes=train_set.num_classes, in_channels=channels, width_mult=width,
                  input_size=(height, width_px))
    create_model(name, build=False, **kwargs)  # refuses a width this machine cannot hold
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return models.create_for_data(name, **kwargs), f"model {name}"


def _flag(argv: list, flag: str):
    return argv[argv.index(flag) + 1] if flag in argv else None


def _source_model(stage, train_set):
    """A load stage's source, built on the meta device with the head and input its import will give it."""
    source = stage.argv[0]
    classes = _flag(stage.argv, "--num-classes")
    shape = _flag(stage.argv, "--input")
    shape = tuple(int(v) for v in shape.lower().split("x")) if shape else tuple(train_set.input_shape)
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        model = models.create_for_data(source, num_classes=int(classes) if classes else train_set.num_classes,
                                       in_channels=shape[0], input_size=shape[1:])
    return model, f"model {source}"


def check_models_and_data(recipe: Recipe, stages: list, quick: bool) -> None:
    """Load each stage's data; check the starting model and every teacher file against it."""
    cache: dict = {}
    first = stages[0]
    train_set, _ = _data_sets(recipe, first.data, quick, cache) if first.data else (None, None)
    if first.name == "load" and first.file is not None:
        model, label = _load_model(first.file, "--model"), first.file
    elif first.name == "load":
        model, label = _source_model(first, train_set)
    else:
        model, label = _zoo_model(first, train_set)
    for stage in stages:
        if not stage.data or stage.name == "export":
            continue
        train_set, _ = _data_sets(recipe, stage.data, quick, cache)
        where = f"{recipe.path}:{stage.line}: stage {stage.index} ({stage.name})"
        try:
            if next(model.parameters(), torch.empty(0)).is_meta:
                _meta_fits(model, train_set, label)
            else:
                check_fits_data(model, train_set, label, stage.data)
            if stage.teacher not in (None, "original", "previous"):
                teacher = _load_model(stage.teacher, "teacher")
                check_fits_data(teacher, train_set, f"teacher {stage.teacher}", stage.data)
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None


def _meta_fits(model, dataset, label: str) -> None:
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *dataset.input_shape, device="meta"))
    except RuntimeError as exc:
        shape = "x".join(map(str, dataset.input_shape))
        raise UserError(f"{label} cannot take the {shape} images of {dataset.name} "
                        f"({str(exc).splitlines()[0][:160]})") from None


def _read_json(path: str):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def foreign_entries(out_dir: str) -> list[str]:
    """Entries of ``out_dir`` that no run writes (the user's own files)."""
    foreign = [n for n in os.listdir(out_dir) if n not in _OURS and not _TEMPORARY.match(n)]
    stages = os.path.join(out_dir, "stages")
    if os.path.isdir(stages):
        foreign += [os.path.join("stages", n) for n in os.listdir(stages)
                    if not (_STAGE_FOLDER.match(n) or n == "sensitivity.json" or _TEMPORARY.match(n))]
    elif os.path.exists(stages):
        foreign.append("stages")
    return sorted(foreign)


def check_out_folder(out_dir: str, recipe: Recipe, force: bool) -> None:
    """Refuse a folder that holds anything but a resumable run of this recipe, unless ``force``."""
    if not os.path.exists(out_dir):
        return
    if not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} is a file; give a folder (the run writes several files into it)")
    if force:
        return
    foreign = foreign_entries(out_dir)
    marker = _read_json(os.path.join(out_dir, RUN_FILE)) or _read_json(os.path.join(out_dir, ARTEFACTS["json"]))
    owner = (marker or {}).get("recipe")
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise UserError(f"--out {out_dir} holds files that are not a run of recipe {recipe.name} ({shown}); "
                        "choose a new or empty folder, or add --force (the run's own files are replaced, "
                        "yours are left alone)")
    if owner is not None and owner != recipe.name:
        raise UserError(f"--out {out_dir} holds a run of recipe {owner}, not {recipe.name}; choose another "
                        "folder, or add --force to replace that run")
