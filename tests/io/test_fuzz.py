"""Seeded fuzzing: every copy of a model file with random bytes flipped is refused, never loaded wrong."""

import random

import pytest
import torch

import torchslim
from torchslim import models
from torchslim.errors import UserError
from torchslim.export.packed import save_packed
from torchslim.quant import QuantConfig, freeze, quantize

COPIES = 60


def _model():
    torch.manual_seed(0)
    return models.create("lenet5", width_mult=0.5).eval()


def _files(tmp_path):
    plain = tmp_path / "m.safetensors"
    torchslim.save(_model(), plain)
    packed = tmp_path / "m.packed"
    save_packed(freeze(quantize(_model(), QuantConfig(method="bwn"))), packed)
    return {"plain": plain, "packed": packed}


@pytest.mark.parametrize("kind", ["plain", "packed"])
def test_every_copy_with_flipped_bytes_is_refused(kind, tmp_path):
    path = _files(tmp_path)[kind]
    torchslim.load(path)  # the intact file loads
    data = path.read_bytes()
    rng = random.Random(2026)
    header_end = 8 + int.from_bytes(data[:8], "little")
    refused = 0
    for copy in range(COPIES):
        damaged = bytearray(data)
        # Half the copies hit the header (length, JSON, padding), half anywhere; 1-3 bytes each.
        span = header_end if copy % 2 else len(data)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(span)] ^= rng.randint(1, 255)
        target = tmp_path / f"copy{copy}{path.suffix}"
        target.write_bytes(bytes(damaged))
        with pytest.raises(UserError):
            torchslim.load(target)
        refused += 1
    assert refused == COPIES


def test_a_whitespace_flip_in_the_header_padding_is_refused(tmp_path):
    """JSON that stays valid (a space turned into a tab) is still a changed file."""
    for path in _files(tmp_path).values():
        data = bytearray(path.read_bytes())
        header_end = 8 + int.from_bytes(data[:8], "little")
        spaces = [i for i in range(8, header_end) if data[i] == 0x20]
        assert spaces  # safetensors pads its header with spaces
        data[spaces[-1]] = 0x09
        path.write_bytes(bytes(data))
        with pytest.raises(UserError, match="checksum"):
            torchslim.load(path)


def _unsealed(tmp_path, version):
    import json

    from safetensors.torch import save as st_save

    from torchslim.io.serialize import _state_tensors, build_header

    model = _model()
    header = build_header(model)
    header["format"] = version
    path = tmp_path / f"format{version}.safetensors"
    path.write_bytes(st_save(_state_tensors(model.state_dict()), metadata={"torchslim": json.dumps(header)}))
    return model, path


def test_files_written_before_the_checksum_still_load(tmp_path):
    model, path = _unsealed(tmp_path, 1)
    x = torch.randn(2, *model.input_shape)
    assert torch.equal(torchslim.load(path)(x), model(x))


def test_a_current_file_that_lost_its_checksum_is_refused(tmp_path):
    _, path = _unsealed(tmp_path, 2)
    with pytest.raises(UserError, match="lost its checksum"):
        torchslim.load(path)
