"""``torchslim compress --recipe R --out DIR``: run a chain of compression stages and report on it."""

from __future__ import annotations

from ..checks import THREADS
from ..flags.common import add_json_arg
from .common import emit


def add_parser(subparsers):
    parser = subparsers.add_parser("compress", help="run a recipe (prune, fine-tune, quantize, export, ...) "
                                   "and write the model files and report")
    parser.add_argument("--recipe", required=True, metavar="R",
                        help="a YAML recipe file, or a shipped recipe name (see --list)")
    parser.add_argument("--model", default=None, metavar="FILE|SOURCE",
                        help="start from this saved model instead of the recipe's train/load stage; a source "
                             "(torchvision:resnet18, timm:NAME, PKG.MODULE:CALLABLE) is imported for the data "
                             "instead, or trained by the recipe's train stage")
    parser.add_argument("--data", default=None, metavar="NAME[:DIR]", help="data set (default: the recipe's)")
    parser.add_argument("--quick", action="store_true", help="the recipe's short variant (minutes)")
    parser.add_argument("--threads", type=THREADS, default=1, help="threads for the latency measurements")
    parser.add_argument("--check", action="store_true", help="check the recipe and print the plan; run nothing")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (rerun to resume)")
    parser.add_argument("--force", action="store_true",
                        help="write into --out even if it holds other files or another recipe's run (the run's "
                             "own files are replaced, others are left alone)")
    add_json_arg(parser)
    parser.set_defaults(run=run, out_is_folder=True)


def format_table(table: list[dict]) -> str:
    def ms(value):
        return "-" if value is None else f"{value:.3f}"

    width = max(16, *(len(row["model"]) + 2 for row in table))
    lines = [f"{'model':<{width}}{'top-1':>8}{'params':>12}{'MACs':>14}{'bytes':>12}{'packed':>11}"
             f"{'float ms':>10}{'int8 ms':>9}{'binary ms':>10}"]
    for row in table:
        lat = row.get("latency_ms") or {}
        packed = "-" if row.get("packed_bytes") is None else f"{row['packed_bytes']:,}"
        lines.append(f"{row['model']:<{width}}{row['top1']:>8.4f}{row['params']:>12,}{row['macs']:>14,}"
                     f"{row['size_bytes']:>12,}{packed:>11}{ms(lat.get('float')):>10}{ms(lat.get('int8')):>9}"
                     f"{ms(lat.get('binary')):>10}")
    return "\n".join(lines)


def run(args) -> int:
    from ..errors import UserError  # lazy: loads when the verb runs
    from ..pipeline import compress, load_recipe, plan  # lazy: loads when the verb runs
    from ..pipeline.runner import stage_argv  # lazy: loads when the verb runs
    from ..pipeline.validate import check_models_and_data, check_order  # lazy: loads when the verb runs

    recipe = load_recipe(args.recipe)
    if args.check:
        stages = plan(recipe, quick=args.quick, data=args.data, model=args.model)
        check_order(recipe, stages)
        check_models_and_data(recipe, stages, args.quick)
        lines = [f"{recipe.path}: {len(stages)} stages, valid"]
        lines += [f"  {s.index}. {s.name}: " + ("load " + s.file if s.verb is None else " ".join(
            ["torchslim", *stage_argv(s, "INPUT", "OUT", "ORIGINAL")])) for s in stages]
        emit(args, {"recipe": recipe.name, "valid": True, "stages": [s.name for s in stages]}, "\n".join(lines))
        return 0
    if not args.out:
        raise UserError("--out DIR is required (the stages, model files and report go there)")
    report = compress(recipe, args.out, model=args.model, data=args.data, quick=args.quick, threads=args.threads,
                      log=print, force=args.force)
    text = "\n".join(["", format_table(report["table"]), "",
                      f"report: {report['out_dir']}/report.html (and report.json, model.safetensors, model.packed"
                      f"{', model.onnx' if 'onnx' in report['artefacts'] else ''})"])
    emit(args, report, text)
    return 0
