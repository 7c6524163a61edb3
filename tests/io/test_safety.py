"""A file can never make torchslim import or run anything, nor allocate from an unchecked shape."""

import copy
import json
import os
import subprocess
import sys
import zlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import torchslim
from tests.conftest import REPO
from torchslim import models
from torchslim.errors import UserError
from torchslim.export.compact import expand_modules, modules_delta
from torchslim.export.packed import HEADER_TENSOR, pack_model
from torchslim.io import describe_modules
from torchslim.io.container import placeholder_metadata, seal

HOSTILE_NAMES = ["nn.functional", "torchslim..x", "torchslim.__main__.X", "torchslim.__main__:main", "os:system",
                 "builtins:eval", "subprocess:run", "os.system", "torch.nn.functional.relu", "nn.Module.__init__"]


def _plain_file(tmp_path, tamper, name="m.safetensors"):
    """A lenet5 file whose header ``tamper`` edits, sealed again (an attacker can recompute the checksum)."""
    good = tmp_path / "good.safetensors"
    torchslim.save(models.create("lenet5"), good)
    with safe_open(str(good), "pt") as handle:
        header = json.loads(handle.metadata()["torchslim"])
    tensors = st_load(good.read_bytes())
    tamper(header)
    path = tmp_path / name
    path.write_bytes(seal(st_save(tensors, metadata={"torchslim": json.dumps(header), **placeholder_metadata()})))
    return path


def _packed_file(tmp_path, tamper):
    """The same attack on a packed container, with its header checksum recomputed too."""
    import hashlib

    data = pack_model(models.create("lenet5"))
    blobs = st_load(data)
    text = json.loads(zlib.decompress(blobs[HEADER_TENSOR].numpy().tobytes()[32:]))
    fresh = describe_modules(models.create("lenet5"))
    text["model"]["modules"] = copy.deepcopy(expand_modules(text["model"]["modules"], fresh))
    tamper(text["model"])
    text["model"]["modules"] = modules_delta(text["model"]["modules"], fresh)
    raw = json.dumps(text).encode()
    blobs[HEADER_TENSOR] = torch.frombuffer(bytearray(hashlib.sha256(raw).digest() + zlib.compress(raw)),
                                            dtype=torch.uint8)
    path = tmp_path / "m.packed"
    path.write_bytes(seal(st_save(blobs, metadata={"torchslim.packed": "2", **placeholder_metadata()})))
    return path


def _as_layer_type(name):
    def tamper(header):
        header["modules"][0] = [header["modules"][0][0], name, {"in_channels": 1}]
    return tamper


def _as_source(name, sentinel):
    def tamper(header):
        header["arch"] = {"name": name, "kwargs": {"args": ["touch", str(sentinel)], "command": f"touch {sentinel}"}}
    return tamper


@pytest.mark.parametrize("kind", ["plain", "packed"])
@pytest.mark.parametrize("where", ["layer", "source"])
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_is_refused_and_nothing_is_imported_or_run(name, where, kind, tmp_path):
    sentinel = tmp_path / "ran"
    tamper = _as_layer_type(name) if where == "layer" else _as_source(name, sentinel)
    make = _plain_file if kind == "plain" else _packed_file
    (tmp_path / "warm").mkdir()
    torchslim.load(make(tmp_path / "warm", lambda header: None))  # the imports a good load makes
    path = make(tmp_path, tamper)
    before = set(sys.modules)
    with pytest.raises(UserError) as error:
        torchslim.load(path)
    assert "\n" not in str(error.value)
    assert set(sys.modules) == before  # nothing new imported, torchslim.__main__ included
    assert "torchslim.__main__" not in sys.modules
    assert not sentinel.exists()


def test_cli_refuses_a_crafted_file_with_one_line_and_exit_2(tmp_path):
    sentinel = tmp_path / "ran"
    path = _plain_file(tmp_path, _as_source("subprocess:run", sentinel))
    run = subprocess.run([sys.executable, "-m", "torchslim", "profile", str(path)], capture_output=True, text=True,
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert run.returncode == 2
    assert run.stderr.startswith("torchslim: error: ") and run.stderr.count("\n") == 1
    assert "user code, imported only when trusted" in run.stderr
    assert not sentinel.exists()


def test_importing_main_runs_nothing():
    code = "import sys; sys.argv = ['host', 'train']; import torchslim.__main__; print('still here')"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=REPO))
    assert run.returncode == 0 and run.stdout.strip() == "still here"


def _big_linear(header):
    path = next(record for record in header["modules"] if record[1] == "nn.Linear")
    path[2]["in_features"] = 1_000_000
    path[2]["out_features"] = 1_000_000  # 4 TB if it were allocated


@pytest.mark.parametrize("kind", ["plain", "packed"])
def test_a_shape_the_tensors_do_not_have_is_refused_before_allocating(kind, tmp_path):
    path = (_plain_file if kind == "plain" else _packed_file)(tmp_path, _big_linear)
    with pytest.raises(UserError, match="far larger than the file|does not match|declares more"):
        torchslim.load(path)


@pytest.mark.parametrize("kind", ["plain", "packed"])
def test_source_options_that_would_allocate_too_much_are_refused(kind, tmp_path):
    def huge(header):
        header["arch"]["kwargs"]["num_classes"] = 10**9

    path = (_plain_file if kind == "plain" else _packed_file)(tmp_path, huge)
    with pytest.raises(UserError, match="far larger than the file"):
        torchslim.load(path)


def test_a_user_source_loads_only_when_trusted(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    (package / "userpkg").mkdir(parents=True)
    (package / "userpkg" / "__init__.py").write_text("")
    (package / "userpkg" / "nets.py").write_text(
        "import torch\n"
        "def small(width=4):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, width), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(width, 3))\n")
    monkeypatch.syspath_prepend(str(package))
    model = models.create("userpkg.nets:small", width=5, input_size=(2, 2))
    assert model.input_shape == (3, 2, 2)
    path = tmp_path / "u.safetensors"
    torchslim.save(model, path)
    sys.modules.pop("userpkg.nets", None)
    sys.modules.pop("userpkg", None)
    with pytest.raises(UserError, match=r"trust=\['userpkg'\]"):
        torchslim.load(path)
    assert "userpkg" not in sys.modules
    with pytest.raises(UserError, match="trust=\\['userpkg'\\]"):
        torchslim.load(path, trust=["otherpkg", "userpk"])
    loaded = torchslim.load(path, trust=["userpkg"])
    x = torch.randn(2, 3, 2, 2)
    assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.parametrize("kind", ["plain", "packed"])
@pytest.mark.parametrize("key", ["arch", "modules", "input_shape", "meta", "state_versions", "format", "num_classes"])
def test_a_header_value_of_the_wrong_kind_is_a_one_line_error(kind, key, tmp_path):
    make = _plain_file if kind == "plain" else _packed_file
    for index, value in enumerate([None, [], "x", 1e308, {}, -1, [[1, 2, 3]], {"name": 5},
                                   {"name": "lenet5", "kwargs": [1]}]):
        folder = tmp_path / str(index)
        folder.mkdir()

        def tamper(header, value=value):
            header[key] = value

        try:
            path = make(folder, tamper)
        except (TypeError, KeyError, AttributeError, ValueError):
            continue  # not even a file can be written with it (the packed layer delta needs a list)
        try:
            model = torchslim.load(path)
        except UserError as error:
            assert "\n" not in str(error)
        else:  # a value load does not need (a note, the class count) may stay: the model is still whole
            assert (key in ("num_classes", "state_versions", "input_shape", "format") or value in (None, [])
                    or (key == "meta" and isinstance(value, dict)))
            assert sum(p.numel() for p in model.parameters()) > 0


def test_a_packed_file_cannot_declare_a_huge_model_it_would_decode(tmp_path):
    """Layer shapes and field counts edited together (consistent, but far beyond the file)."""
    def huge(header):
        for record in header["modules"]:
            if record[1] == "nn.Linear":
                record[2]["in_features"] = 400_000
                record[2]["out_features"] = 120_000
                break

    with pytest.raises(UserError, match="far larger than the file"):
        torchslim.load(_packed_file(tmp_path, huge))
