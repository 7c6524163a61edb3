"""After the last stage: the deployable files, the measurements and the report."""

from __future__ import annotations

import json
import os
import shutil

from ..io import atomic_path, atomic_write_text
from .measure import channels_kept, latency_rows
from ..errors import UserError

ARTEFACTS = {"model": "model.safetensors", "packed": "model.packed", "onnx": "model.onnx",
             "json": "report.json", "html": "report.html"}


def _exported(records: list[dict], out_dir: str) -> dict:
    """{"packed" | "onnx": path} written by the recipe's export stages after its last model change."""
    exported = {}
    for record in records:
        if record["name"] != "export":
            exported = {}
        else:
            kind = "onnx" if record["output"].endswith(".onnx") else "packed"
            exported[kind] = os.path.join(out_dir, record["output"])
    return exported


def write_artefacts(final_path: str, out_dir: str, exported: dict, log=print) -> dict:
    """The final model, its packed file (read back to check it) and its ONNX file (checked with onnxruntime).

    A recipe's own export of the final model (with its options, e.g. Huffman coding) is used as is.
    """
    from .. import load  # lazy: heavy: loads when a run needs it
    from ..export import load_packed, save_packed  # lazy: heavy: loads when a run needs it
    from ..export.onnx import export_onnx  # lazy: heavy: loads when a run needs it

    paths = {key: os.path.join(out_dir, name) for key, name in ARTEFACTS.items()}
    with atomic_path(paths["model"]) as tmp:
        shutil.copyfile(final_path, tmp)
    model = load(paths["model"])
    for kind, source in exported.items():
        with atomic_path(paths[kind]) as tmp:
            shutil.copyfile(source, tmp)
    if "packed" not in exported:
        save_packed(model, paths["packed"])
        load_packed(paths["packed"])
    sizes = {"model": os.path.getsize(paths["model"]), "packed": os.path.getsize(paths["packed"])}
    try:
        sizes["onnx"] = (os.path.getsize(paths["onnx"]) if "onnx" in exported
                         else export_onnx(model, paths["onnx"])["size_bytes"])
    except (RuntimeError, UserError, ImportError) as exc:  # say so; the other artefacts stand
        log(f"note: no ONNX file: {str(exc).splitlines()[0][:160]}")
        sizes["onnx"] = None
    return sizes


def _rounds(records: list[dict], recipe_name: str) -> list[dict]:
    """Accuracy and MACs after each pruning round (round 0 is the stage's input)."""
    rounds = []
    for previous, record in zip(records, records[1:]):
        if record["name"] != "prune":
            continue
        start = previous["metrics"]
        rounds.append({"recipe": recipe_name, "stage": record["index"], "round": 0, "top1": start["top1"],
                       "macs": start["macs"], "params": start["params"]})
        steps = record["payload"].get("rounds") or [{"round": 1, **record["metrics"]}]
        for step in steps:
            rounds.append({"recipe": recipe_name, "stage": record["index"], "round": step["round"],
                           "top1": step.get("top1"), "macs": step["macs"], "params": step["params"]})
    return rounds


def _stage_rows(records: list[dict], recipe_name: str) -> list[dict]:
    rows = []
    last = {}
    for record in records:
        metrics = {**last, **record["metrics"]}
        if record["name"] != "export":
            last = metrics
        rows.append({"recipe": recipe_name, "index": record["index"], "name": record["name"],
                     "seconds": record["seconds"], "command": record.get("command"),
                     **{k: metrics.get(k) for k in ("top1", "params", "macs", "size_bytes")}})
    return rows


def sensitivity(original_path: str, test_set, options: dict, out_dir: str, quick: bool, log=print) -> dict:
    """The per-layer pruning sweep of the starting model, cached beside the stages."""
    from .. import load  # lazy: heavy: loads when a run needs it
    from ..prune.sensitivity import sensitivity_sweep  # lazy: heavy: loads when a run needs it

    options = dict(options)
    if quick:
        options["images"] = min(options.get("images", 1000), 200)
    cache = os.path.join(out_dir, "stages", "sensitivity.json")
    key = {"model": os.path.getmtime(original_path), "options": options}
    cached = _read(cache)
    if cached and cached.get("key") == json.loads(json.dumps(key)):
        return cached["result"]
    log("sensitivity: pruning each layer alone at " + ", ".join(f"{r:g}" for r in options.get(
        "ratios", (0.25, 0.5, 0.75))))
    kwargs = {"ratios": tuple(options["ratios"])} if "ratios" in options else {}
    if "images" in options:
        kwargs["max_images"] = options["images"]
    if "criterion" in options:
        kwargs["criterion"] = options["criterion"]
    result = sensitivity_sweep(load(original_path), test_set, **kwargs)
    atomic_write_text(cache, json.dumps({"key": key, "result": result}))
    return result


def _read(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def build_report(recipe, records: list[dict], out_dir: str, test_set, calibration, quick: bool,
                 threads: int = 1, log=print) -> dict:
    """Measure, write the artefacts, report.json and report.html; returns the report."""
    from .. import load  # lazy: heavy: loads when a run needs it
    from ..export import packed_size  # lazy: heavy: loads when a run needs it
    from ..profile.hardware import hardware  # lazy: heavy: loads when a run needs it
    from ..report import render_html  # lazy: heavy: loads when a run needs it

    models = [r for r in records if r["name"] != "export"]
    original_path = os.path.join(out_dir, models[0]["output"])
    final_path = os.path.join(out_dir, models[-1]["output"])
    sizes = write_artefacts(final_path, out_dir, _exported(records, out_dir), log)
    original, final = load(original_path), load(final_path)
    log("timing the original and the final model (batch 1, interleaved)")
    latency = latency_rows({"original": original, "final": final}, tuple(original.input_shape), calibration,
                           threads=threads, repeats=10 if quick else 30)
    table = [
        {"model": "original", **{k: models[0]["metrics"][k] for k in ("top1", "params", "macs", "size_bytes")},
         "packed_bytes": packed_size(original), "latency_ms": latency["original"]},
        {"model": "final", **{k: models[-1]["metrics"][k] for k in ("top1", "params", "macs", "size_bytes")},
         "packed_bytes": sizes["packed"], "latency_ms": latency["final"]},
    ]
    report = {
        "title": f"{recipe.name}{' (quick)' if quick else ''}", "recipe": recipe.name, "quick": quick,
        "summary": recipe.description, "data": test_set.name,
        "hardware": hardware(), "threads": threads,
        "seconds": round(sum(r["seconds"] for r in records), 1),
        "table": table, "stages": _stage_rows(records, recipe.name),
        "pruning_rounds": _rounds(records, recipe.name), "channels": channels_kept(original, final),
        "sensitivity": (sensitivity(original_path, test_set, recipe.sensitivity, out_dir, quick, log)
                        if recipe.sensitivity is not None else None),
        "artefacts": {k: v for k, v in ARTEFACTS.items() if k != "onnx" or sizes["onnx"] is not None},
        "artefact_bytes": sizes,
    }
    atomic_write_text(os.path.join(out_dir, ARTEFACTS["json"]), json.dumps(report, indent=1) + "\n")
    render_html(report, os.path.join(out_dir, ARTEFACTS["html"]))
    return report
