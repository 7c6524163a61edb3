"""Running a planned recipe: one subprocess per stage, every result atomic, resumable.

Layout of the output folder::

    DIR/stages/02-prune/stage.json    what the stage is (its fingerprint and command), written first
    DIR/stages/02-prune/model.safetensors
    DIR/stages/02-prune/result.json   written last: the stage is finished only when this exists
    DIR/model.safetensors  model.packed  model.onnx  report.json  report.html

A stage is reused when its ``result.json`` carries the fingerprint the plan gives
it now, so a killed run (kill -9 included) resumes at the first unfinished stage,
and an edited recipe reruns from the first changed stage on.  Inside a stage, the
verbs' own checkpoints (training epochs, pruning rounds) resume the work too.
Each stage runs as ``python -m torchslim.cli.main VERB ... --json`` (under
``torchrun`` when ``nproc_per_node > 1``), so a stage sees exactly what a user
of the CLI would.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from ..checks import remove_stale_temporaries
from ..errors import UserError
from ..io import atomic_path, atomic_write_text
from .finish import ARTEFACTS
from .plan import MODEL_FILE, PlannedStage
from .schema import STAGES

_STAGE_FOLDER = re.compile(r"\d{2}-[a-z_]+$")
RESULT = "result.json"
RUN_FILE = "run.json"  # names the recipe a run folder belongs to
STAGE = "stage.json"
PAYLOAD = "payload.json"  # the verb's --json answer, kept as soon as it returns


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _write_json(path: str, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


@contextlib.contextmanager
def exclusive(folder: str):
    """Refuse a second run on the same folder; the lock goes with the process, even on kill -9."""
    import fcntl  # lazy: POSIX only

    os.makedirs(folder, exist_ok=True)
    handle = open(os.path.join(folder, ".lock"), "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UserError(f"another `torchslim compress` is writing to {folder}; wait for it or use another --out")
    try:
        yield
    finally:
        handle.close()


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the runner dies, so no orphan keeps writing (Linux)."""
    try:
        import ctypes  # lazy: loads only on this platform's path

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stage_argv(stage: PlannedStage, input_file: str | None, out: str, original: str | None) -> list[str]:
    """The stage as ``torchslim`` arguments: the verb, its input, the recipe's flags, data, teacher, output."""
    argv = [stage.verb]
    if stage.name not in ("train", "distill", "load"):  # a load stage's import names its source in argv
        argv.append(input_file)
    argv += stage.argv
    if stage.data and stage.name != "export":
        argv += ["--data", stage.data]
    teacher = {"original": original, "previous": input_file}.get(stage.teacher, stage.teacher)
    if stage.name == "distill":
        argv += ["--teacher", teacher or input_file]
    elif teacher and "teacher" in STAGES[stage.name].managed:  # the stages whose teacher the planner resolved
        argv += ["--teacher", teacher]
    return argv + ["--out", out, "--json"]


def stage_command(stage: PlannedStage, input_file: str | None, out: str, original: str | None) -> list[str]:
    """The full command line of a stage (under torchrun when it asks for several processes)."""
    launcher = [sys.executable, "-m", "torchslim.cli.main"]
    if stage.nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc_per_node={stage.nproc}", "-m", "torchslim.cli.main"]
    return launcher + stage_argv(stage, input_file, out, original)


def run_command(command: list[str], progress: bool, echo) -> dict:
    """Run one stage; stream its text, return its ``--json`` payload; UserError if it fails."""
    env = dict(os.environ)
    env["TORCHSLIM_PROGRESS"] = "1" if progress and sys.stderr.isatty() else "0"
    env.setdefault("PYTHONUNBUFFERED", "1")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=_die_with_parent)
    payload = None
    try:
        for line in process.stdout:
            text = line.rstrip("\n")
            if text.startswith("{"):
                with contextlib.suppress(ValueError):
                    payload = json.loads(text)
                    continue
            if text and echo is not None:
                echo("    " + text)
        code = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    if code != 0 or payload is None:
        verb = command[command.index("torchslim.cli.main") + 1]
        raise UserError(f"the {verb} stage failed (exit code {code}; its error is above); "
                        "fix it and rerun the same command to resume")
    return payload


def run_stage(stage: PlannedStage, folder: str, fingerprint: str, input_file: str | None, original: str | None,
              measure, progress: bool, echo) -> dict:
    """Run (or reuse) one stage; returns its result record."""
    if os.path.isdir(folder):
        for name in os.listdir(folder):  # temporaries of a write that was killed: never a finished file
            if name.startswith(".tmp-"):
                os.remove(os.path.join(folder, name))
    done = _read_json(os.path.join(folder, RESULT))
    output = os.path.join(folder, stage.output)
    if done and done.get("fingerprint") == fingerprint and os.path.exists(output):
        done["reused"] = True
        return done
    started = _read_json(os.path.join(folder, STAGE))
    if started is None or started.get("fingerprint") != fingerprint:
        shutil.rmtree(folder, ignore_errors=True)  # another recipe's leftovers: nothing here is ours
    os.makedirs(folder, exist_ok=True)
    began = time.perf_counter()
    if stage.verb is None:  # a load stage's file: copied as it is
        command = None
        with atomic_path(output) as tmp:
            shutil.copyfile(stage.file, tmp)
        payload = {"file": os.path.abspath(stage.file)}
    else:
        command = stage_command(stage, input_file, output, original)
        payload = _read_json(os.path.join(folder, PAYLOAD)) if started and os.path.exists(output) else None
        if payload is None:  # not run yet, or killed before the verb answered
            _write_json(os.path.join(folder, STAGE), {"fingerprint": fingerprint, "command": command[2:]})
            payload = run_command(command, progress, echo)
            _write_json(os.path.join(folder, PAYLOAD), payload)
    record = {"fingerprint": fingerprint, "index": stage.index, "name": stage.name,
              "command": None if command is None else " ".join(["torchslim", *command[command.index(
                  "torchslim.cli.main") + 1:]]),
              "seconds": round(time.perf_counter() - began, 2), "payload": payload,
              "output": os.path.relpath(output, os.path.dirname(os.path.dirname(folder)))}
    if stage.changes_model:
        record["metrics"] = measure(output)
    else:
        record["metrics"] = {"size_bytes": os.path.getsize(output)}
    _write_json(os.path.join(folder, RESULT), record)
    record["reused"] = False
    return record


def run_stages(stages: list, out_dir: str, measure, progress: bool = True, log=print) -> list[dict]:
    """Run every stage in order; returns their records.  The model flows from stage to stage."""
    records, previous, current, original = [], "", None, None
    for stage in stages:
        fingerprint = stage.fingerprint(previous)
        folder = os.path.join(out_dir, "stages", stage.folder)
        log(f"[{stage.index}/{len(stages)}] {stage.name}")
        record = run_stage(stage, folder, fingerprint, current, original, measure, progress, log)
        log(f"[{stage.index}/{len(stages)}] {stage.name}: {summary_line(record)}")
        records.append(record)
        previous = fingerprint
        if stage.changes_model:
            current = os.path.join(folder, MODEL_FILE)
            original = original or current
    _drop_stale(out_dir, stages)
    return records


def _drop_stale(out_dir: str, stages: list) -> None:
    """Stage folders no stage of this plan owns (a longer recipe run earlier) are removed; nothing else."""
    folder = os.path.join(out_dir, "stages")
    keep = {s.folder for s in stages}
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name not in keep and _STAGE_FOLDER.match(name) and os.path.exists(os.path.join(path, STAGE)):
            shutil.rmtree(path, ignore_errors=True)


def start_run(out_dir: str, recipe) -> None:
    """Under the lock: name the recipe this folder runs, and remove the temporary files a killed
    run left beside its artefacts (the stages clean their own folders)."""
    for name in (*ARTEFACTS.values(), RUN_FILE, os.path.join("stages", "sensitivity.json")):
        remove_stale_temporaries(os.path.join(out_dir, name))
    _write_json(os.path.join(out_dir, RUN_FILE), {"recipe": recipe.name, "path": os.path.abspath(recipe.path)})


def summary_line(record: dict) -> str:
    metrics = record.get("metrics", {})
    parts = []
    if metrics.get("top1") is not None:
        parts.append(f"top-1 {metrics['top1']:.4f}")
    if metrics.get("macs") is not None:
        parts.append(f"{metrics['macs'] / 1e6:.2f}M MACs")
    if metrics.get("params") is not None:
        parts.append(f"{metrics['params']:,} params")
    parts.append(f"{metrics.get('size_bytes', 0):,} B")
    parts.append("reused" if record.get("reused") else f"{record['seconds']:.1f} s")
    return ", ".join(parts)
