"""Reading and checking a YAML recipe, with the file and line of every mistake.

A recipe is a mapping with a ``stages:`` list; each item is a one-key mapping
from the stage name to its options::

    name: taylor-vgg16
    data: fashion-mnist-32
    quick: {subset: 2000, epochs: 1}     # --quick: these override every stage that has the option
    stages:
      - train: {model: vgg16, width_mult: 0.25, epochs: 10}
      - prune: {criterion: taylor, target_macs: 0.33, step_channels: 64, finetune_epochs: 1,
                quick: {step_channels: 32}}   # a stage's own --quick overrides

The whole recipe is checked before anything runs (:func:`load_recipe`).
"""

from __future__ import annotations

import dataclasses
import os

from ..errors import UserError, unknown_choice
from .schema import STAGES, Option, check_value, stage_options

TOP_LEVEL = ("name", "description", "data", "quick", "sensitivity", "stages")
SENSITIVITY_KEYS = ("ratios", "images", "criterion")
RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")


@dataclasses.dataclass
class Stage:
    index: int  # 1-based position in the recipe
    name: str
    options: dict
    quick: dict
    line: int
    lines: dict  # option key -> line

    def resolved(self, quick: bool, quick_defaults: dict) -> dict:
        """The options in effect: with --quick, the recipe's quick defaults, then the stage's own."""
        options = dict(self.options)
        if quick:
            table = stage_options(self.name)
            options.update({k: v for k, v in quick_defaults.items() if k in table})
            options.update(self.quick)
        return options


@dataclasses.dataclass
class Recipe:
    path: str
    name: str
    description: str
    data: str | None
    quick: dict
    sensitivity: dict | None
    stages: list


class _Located:
    """A YAML value with its line, and (for mappings) the lines of its keys."""

    def __init__(self, path: str):
        self.path = path

    def error(self, line: int, message: str) -> UserError:
        return UserError(f"{self.path}:{line}: {message}")

    def convert(self, node, value):
        """(value, line, {key: (child value, key line, child node)}) for a composed node and its data."""
        import yaml  # lazy: PyYAML loads only to read a recipe

        line = node.start_mark.line + 1
        if not isinstance(node, yaml.MappingNode):
            return value, line, None
        children = {}
        for key_node, value_node in node.value:
            key = key_node.value
            if key in children:
                raise self.error(key_node.start_mark.line + 1, f"key {key!r} is given twice")
            children[key] = (value[key] if isinstance(value, dict) and key in value else None,
                             key_node.start_mark.line + 1, value_node)
        return value, line, children


def resolve_recipe_path(name_or_path: str) -> str:
    """A shipped recipe name (``taylor-vgg16``) or a YAML file."""
    if os.path.exists(name_or_path):
        return name_or_path
    shipped = os.path.join(RECIPES_DIR, name_or_path + ".yaml")
    if os.path.exists(shipped) and os.sep not in name_or_path:
        return shipped
    raise unknown_choice("recipe (not a file either)", name_or_path, shipped_recipes())


def shipped_recipes() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(RECIPES_DIR) if f.endswith(".yaml")) if os.path.isdir(RECIPES_DIR) else []


def load_recipe(name_or_path: str) -> Recipe:
    """Read and check a recipe; raises UserError naming the file, line and key of the first mistake."""
    import yaml  # lazy: PyYAML loads only to read a recipe

    path = resolve_recipe_path(name_or_path)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read recipe {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}:{line}: not valid YAML ({problem})") from None
    located = _Located(path)
    if not isinstance(data, dict):
        raise located.error(1, "a recipe is a mapping with a 'stages:' list")
    _, _, top = located.convert(root, data)
    for key, (_, line, _) in top.items():
        if key not in TOP_LEVEL:
            raise located.error(line, str(unknown_choice("top-level key", key, TOP_LEVEL)))
    if "stages" not in top:
        raise located.error(1, "the recipe has no 'stages:' list")
    name = _top_string(located, top, "name", default=os.path.splitext(os.path.basename(path))[0])
    data_name = _top_string(located, top, "data", default=None)
    quick = _quick_defaults(located, top)
    stages = _stages(located, top["stages"])
    return Recipe(path=path, name=name, description=_top_string(located, top, "description", default=""),
                  data=data_name, quick=quick, sensitivity=_sensitivity(located, top), stages=stages)


def _top_string(located, top, key, default):
    if key not in top:
        return default
    value, line, _ = top[key]
    if not isinstance(value, str) or not value:
        raise located.error(line, f"{key} must be a non-empty string, got {value!r}")
    return value


def _quick_defaults(located, top) -> dict:
    if "quick" not in top:
        return {}
    value, line, node = top["quick"]
    _, _, children = located.convert(node, value)
    if not isinstance(value, dict):
        raise located.error(line, f"quick must be a mapping of option defaults, got {value!r}")
    known = {k: (stage, option) for stage in STAGES for k, option in stage_options(stage).items()}
    for key, (item, key_line, _) in children.items():
        if key not in known:
            raise located.error(key_line, "quick: " + str(unknown_choice("option", key, known)))
        stage, option = known[key]
        problem = check_value(stage, option, item)
        if problem:
            raise located.error(key_line, f"quick: {problem}")
    return dict(value)


def _sensitivity(located, top) -> dict | None:
    if "sensitivity" not in top:
        return None
    value, line, node = top["sensitivity"]
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise located.error(line, f"sensitivity must be true, false or a mapping, got {value!r}")
    _, _, children = located.convert(node, value)
    for key, (item, key_line, _) in children.items():
        if key not in SENSITIVITY_KEYS:
            raise located.error(key_line, "sensitivity: " + str(unknown_choice("key", key, SENSITIVITY_KEYS)))
        problem = _check_sensitivity(key, item)
        if problem:
            raise located.error(key_line, f"sensitivity: {problem}")
    return dict(value)


def _check_sensitivity(key, item) -> str | None:
    if key == "ratios":
        good = isinstance(item, list) and item and all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0 < r < 1 for r in item)
        return None if good else f"ratios must be a list of numbers in (0, 1), got {item!r}"
    if key == "images":
        good = isinstance(item, int) and not isinstance(item, bool) and item >= 1
        return None if good else f"images must be an integer >= 1, got {item!r}"
    from ..prune import list_criteria  # lazy: heavy: loads when a run needs it

    return None if item in list_criteria() else str(unknown_choice("criterion", str(item), list_criteria()))


def _stages(located, entry) -> list[Stage]:
    value, line, node = entry
    if not isinstance(value, list) or not value:
        raise located.error(line, "stages must be a non-empty list like '- prune: {criterion: l1, ratio: 0.5}'")
    stages = []
    for index, (item, item_node) in enumerate(zip(value, node.value), start=1):
        item_line = item_node.start_mark.line + 1
        if not isinstance(item, dict) or len(item) != 1:
            raise located.error(item_line, f"stage {index} must be a one-key mapping like '- prune: {{...}}', "
                                           f"got {item!r}")
        (name, options), = item.items()
        if name not in STAGES:
            raise located.error(item_line, f"stage {index}: " + str(unknown_choice("stage", str(name), STAGES)))
        _, _, children = located.convert(item_node, item)
        options_node = children[name][2]
        stages.append(_stage(located, index, name, options, options_node, item_line))
    return stages


def _stage(located, index: int, name: str, options, node, line: int) -> Stage:
    where = f"stage {index} ({name})"
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise located.error(line, f"{where}: options must be a mapping, got {options!r}")
    _, _, children = located.convert(node, options)
    children = children or {}
    quick: dict = {}
    plain, lines = {}, {}
    for key, (item, key_line, child) in children.items():
        lines[key] = key_line
        if key == "quick":
            quick = _quick_options(located, where, name, item, child, key_line)
            continue
        _check_option(located, where, name, key, item, key_line)
        plain[key] = item
    return Stage(index=index, name=name, options=plain, quick=quick, line=line, lines=lines)


def _quick_options(located, where, name, item, node, line) -> dict:
    if not isinstance(item, dict):
        raise located.error(line, f"{where}: quick must be a mapping of options, got {item!r}")
    _, _, children = located.convert(node, item)
    for key, (value, key_line, _) in children.items():
        _check_option(located, f"{where} quick", name, key, value, key_line)
    return dict(item)


def _check_option(located, where, name, key, value, line) -> Option:
    table = stage_options(name)
    if key not in table:
        raise located.error(line, f"{where}: " + str(unknown_choice("option", str(key), table)))
    option = table[key]
    problem = check_value(name, option, value)
    if problem:
        raise located.error(line, f"{where}: {problem}")
    return option
