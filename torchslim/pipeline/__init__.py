"""Recipes: chains of compression stages, run resumably, ending in a report.

``compress(recipe, out_dir)`` checks the whole recipe, plans every stage's
command, runs the stages (each one a CLI verb in its own process, each result
atomic), then writes the final model, its packed and ONNX files, ``report.json``
and ``report.html``.  Rerunning after an interruption resumes at the first
unfinished stage.
"""

from __future__ import annotations

import os

from .plan import PlannedStage, plan
from .recipe import Recipe, Stage, load_recipe, shipped_recipes
from .schema import STAGES, stage_options

__all__ = ["STAGES", "PlannedStage", "Recipe", "Stage", "compress", "load_recipe", "plan", "shipped_recipes",
           "stage_options"]


def _eval_data(recipe: Recipe, stages: list, quick: bool):
    """The test split every stage is measured on, and a few training images to calibrate int8 with."""
    import torch  # lazy: importing this module stays torch-free

    from ..data import load_dataset, parse_data_arg  # lazy: importing the pipeline stays cheap
    from ..data.calibration import calibration_images  # lazy: importing the pipeline stays cheap

    name, root = parse_data_arg(next(s.data for s in stages if s.data))
    subset = recipe.quick.get("subset") if quick else None
    test_set = load_dataset(name, "test", root=root, subset=subset)
    calibration = torch.cat(calibration_images(load_dataset(name, "train", root=root, subset=subset), 64))
    return test_set, calibration


def compress(recipe: str | Recipe, out_dir: str, model: str | None = None, data: str | None = None,
             quick: bool = False, threads: int = 1, progress: bool = True, log=print, force: bool = False) -> dict:
    """Run ``recipe`` (a shipped name, a YAML file or a :class:`Recipe`) into ``out_dir``; returns the report.

    ``out_dir`` must be new, empty or a run of the same recipe (which is resumed); ``force`` writes into
    any folder (the run's files are replaced, others are left alone).
    """
    from .finish import build_report  # lazy: importing the pipeline stays cheap
    from .measure import model_metrics  # lazy: importing the pipeline stays cheap
    from .runner import exclusive, run_stages, start_run  # lazy: importing the pipeline stays cheap
    from .validate import (check_models_and_data, check_order,  # lazy: importing the pipeline stays cheap
                           check_out_folder)

    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    stages = plan(recipe, quick=quick, data=data, model=model)
    check_order(recipe, stages)  # everything knowable is checked before the folder is touched
    check_out_folder(out_dir, recipe, force)
    check_models_and_data(recipe, stages, quick)
    with exclusive(out_dir):
        start_run(out_dir, recipe)
        test_set, calibration = _eval_data(recipe, stages, quick)
        records = run_stages(stages, out_dir, measure=lambda path: model_metrics(path, test_set),
                             progress=progress, log=log)
        report = build_report(recipe, records, out_dir, test_set, calibration, quick, threads=threads, log=log)
    report["out_dir"] = os.path.abspath(out_dir)
    return report
