"""From a checked recipe to the exact commands each stage will run.

Planning changes nothing on disk.  It settles the data, the starting model and
``--quick``, and dry-parses every stage's command line with its verb's own
parser, so a missing required option or two exclusive ones are reported (with
the recipe's file and line) before the first stage starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

from ..checks import check_applies, given_dests
from ..errors import UserError
from .recipe import Recipe, Stage
from .schema import STAGES, stage_options, to_argv, verb_parser

MODEL_FILE = "model.safetensors"
EXPORT_FILES = {"packed": "model.packed", "onnx": "model.onnx"}


@dataclasses.dataclass
class PlannedStage:
    index: int
    name: str
    verb: str | None
    argv: list  # the verb's flags from the recipe (no input/output paths)
    data: str | None
    teacher: str | None  # "original", "previous", a file, or None
    nproc: int
    file: str | None  # load: the model file
    line: int

    @property
    def folder(self) -> str:
        return f"{self.index:02d}-{self.name}"

    @property
    def output(self) -> str:
        """The file this stage writes, inside its folder."""
        if self.name == "export":
            return EXPORT_FILES[self.argv[self.argv.index("--format") + 1]]
        return MODEL_FILE

    @property
    def changes_model(self) -> bool:
        return self.name != "export"

    def fingerprint(self, previous: str) -> str:
        """Names the stage's result: its command, its inputs, and everything before it."""
        content = {"previous": previous, "name": self.name, "argv": self.argv, "data": self.data,
                   "teacher": self.teacher, "nproc": self.nproc}
        if self.file is not None:
            content["file_sha256"] = _file_digest(self.file)
        if self.verb == "import" and "--weights" in self.argv:
            content["weights_sha256"] = _file_digest(self.argv[self.argv.index("--weights") + 1])
        if self.teacher not in (None, "original", "previous"):
            content["teacher_sha256"] = _file_digest(self.teacher)
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _DryParser(Exception):
    pass


def _dry_parse(verb: str, argv: list) -> None:
    """Parse ``argv`` with the verb's parser; raise _DryParser with argparse's message."""
    parser = verb_parser.__wrapped__(verb)  # a private copy: its error hook is replaced below

    def fail(message):
        raise _DryParser(message)

    parser.error = fail  # argparse reports through self.error; raise instead of exiting
    args = parser.parse_args(argv)
    # Combinations argparse cannot express (e.g. a ratio with a MAC target) are checked by the
    # verb's own ``check_args`` default, so a recipe fails here rather than mid-run.
    check = getattr(args, "check_args", None)
    try:
        check_applies(args, given_dests(parser, argv))  # an option that does nothing for this stage
        if check is not None:
            check(args)
    except UserError as exc:
        raise _DryParser(str(exc)) from None


def _starting_stages(recipe: Recipe, model: str | None) -> list[Stage]:
    """The recipe's stages, with ``--model FILE`` standing in for a leading train/load stage."""
    stages = list(recipe.stages)
    first = stages[0]
    if model is not None and not os.path.isfile(model) and first.name == "train" and _is_source(model):
        # An architecture without weights: the recipe's train stage trains it.
        options = {**first.options, "model": model}
        options.pop("width_mult", None)
        stages[0] = dataclasses.replace(first, options=options)
    elif model is not None:
        load = Stage(index=1, name="load", options={"source" if _is_source(model) else "file": model}, quick={},
                     line=first.line, lines={})
        if not os.path.isfile(model) and not _is_source(model):
            raise UserError(f"--model {model}: file not found (nor a model source such as torchvision:resnet18)")
        if first.name in ("train", "load"):
            stages[0] = load
        else:
            stages = [load] + [dataclasses.replace(s, index=s.index + 1) for s in stages]
    elif first.name not in ("train", "load"):
        raise UserError(f"{recipe.path}:{first.line}: stage 1 must be 'train' or 'load' (or give --model FILE)")
    for stage in stages[1:]:
        if stage.name in ("train", "load"):
            raise UserError(f"{recipe.path}:{stage.line}: stage {stage.index} ({stage.name}) can only be the "
                            "first stage")
    return stages


def _is_source(text: str) -> bool:
    """A model source rather than a file: ``torchvision:NAME``, ``timm:NAME``, ``zoo:NAME``, ``PKG.MOD:FN``."""
    if os.path.exists(text) or ":" not in text:
        return False
    from ..models.sources import is_source  # lazy: heavy: loads torch

    return is_source(text)


def _load_stage(where: str, options: dict, data: str | None) -> tuple[str | None, list]:
    """A load stage: (the file it copies, None) or (None, the import command's arguments)."""
    file, source = options.pop("file", None), options.pop("source", None)
    if (file is None) == (source is None):
        raise UserError(f"{where}: needs either 'file:' or 'source:' (or give --model FILE or SOURCE)")
    if file is not None:
        if options:
            raise UserError(f"{where}: {', '.join(sorted(options))} only go with 'source:', not 'file:'")
        if not os.path.isfile(file):
            raise UserError(f"{where}: file not found: {file}")
        return file, []
    if not _is_source(str(source)):
        raise UserError(f"{where}: source {source!r} is not torchvision:NAME, timm:NAME, zoo:NAME or "
                        "PKG.MODULE:CALLABLE")
    if options.get("weights") is not None and not os.path.isfile(options["weights"]):
        raise UserError(f"{where}: weights file not found: {options['weights']}")
    if data is None and not {"num_classes", "input"} <= set(options):
        raise UserError(f"{where}: a source needs the data (for its classes and input) or num_classes and input")
    argv = [str(source)] + to_argv("load", options)
    try:
        _dry_parse("import", argv + ["--out", "OUT"] + (["--data", data] if data else []))
    except _DryParser as exc:
        raise UserError(f"{where}: {_recipe_words(str(exc))}") from None
    return None, argv


def plan(recipe: Recipe, quick: bool = False, data: str | None = None, model: str | None = None) -> list:
    """The planned stages; raises UserError (file:line) for anything that would fail to start."""
    planned = []
    for stage in _starting_stages(recipe, model):
        options = stage.resolved(quick, recipe.quick)
        where = f"{recipe.path}:{stage.line}: stage {stage.index} ({stage.name})"
        stage_data = options.pop("data", None) or data or recipe.data
        spec = STAGES[stage.name]
        # The pipeline resolves the teacher only where it manages it; elsewhere (prune) it is the verb's own flag.
        teacher = options.pop("teacher", None) if "teacher" in spec.managed else None
        nproc = options.pop("nproc_per_node", 1)
        file, verb = None, spec.verb
        if stage.name == "load":
            file, load_argv = _load_stage(where, options, stage_data)
            verb = "import" if file is None else None
        if teacher not in (None, "original", "previous") and not os.path.isfile(teacher):
            raise UserError(f"{where}: teacher must be 'original', 'previous' or an existing file, got {teacher!r}")
        if nproc > 1 and not spec.distributed:
            raise UserError(f"{where}: nproc_per_node applies to train, finetune and distill stages only")
        argv = load_argv if stage.name == "load" else to_argv(stage.name, options)
        if spec.verb is not None:
            needs_data = "data" in stage_options(stage.name) and any(
                "--data" in a.option_strings for a in verb_parser(spec.verb)._actions)
            if needs_data and stage_data is None:
                raise UserError(f"{where}: no data set: give --data or 'data:' in the recipe")
            _check_command(where, stage, spec, argv, stage_data, teacher)
        planned.append(PlannedStage(index=stage.index, name=stage.name, verb=verb, argv=argv,
                                    data=stage_data, teacher=teacher, nproc=nproc, file=file, line=stage.line))
    return planned


def _check_command(where, stage, spec, argv, data, teacher) -> None:
    full = list(argv)
    positional = [a for a in verb_parser(spec.verb)._actions if not a.option_strings and a.dest == "file"]
    if positional:
        full = ["MODEL"] + full
    if any("--data" in a.option_strings for a in verb_parser(spec.verb)._actions) and data:
        full += ["--data", data]
    if stage.name == "distill" or (teacher and stage.name == "finetune"):
        full += ["--teacher", "TEACHER"]
    full += ["--out", "OUT"]
    try:
        _dry_parse(spec.verb, full)
    except _DryParser as exc:
        raise UserError(f"{where}: {_recipe_words(str(exc))}") from None


def _recipe_words(message: str) -> str:
    """argparse speaks of --flags; a recipe author wrote keys."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)
