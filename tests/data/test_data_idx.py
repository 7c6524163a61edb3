import gzip
import struct

import numpy as np
import pytest

from torchslim.data.idx import find_idx, load_idx_split, read_idx, write_idx
from torchslim.errors import UserError

from .data_testfiles import idx_bytes, write_bytes


def assert_one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_images_and_labels(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 3], dtype=np.uint8)
    image_path = write_bytes(tmp_path / "img", idx_bytes(images), gz)
    label_path = write_bytes(tmp_path / "lab", idx_bytes(labels), gz)
    got = read_idx(image_path)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(read_idx(label_path), labels)


def test_gzip_is_detected_from_content_not_name(tmp_path):
    images = np.ones((1, 2, 2), dtype=np.uint8)
    path = tmp_path / "plain-name"
    path.write_bytes(gzip.compress(idx_bytes(images)))
    np.testing.assert_array_equal(read_idx(str(path)), images)


def test_big_endian_types_round_trip(tmp_path):
    values = np.array([[-300, 2], [1000, -1]], dtype=np.int16)
    write_idx(str(tmp_path / "x.gz"), values)
    raw = gzip.decompress((tmp_path / "x.gz").read_bytes())
    assert raw[:4] == bytes([0, 0, 0x0B, 2]) and struct.unpack(">2I", raw[4:12]) == (2, 2)
    assert struct.unpack(">h", raw[12:14])[0] == -300
    got = read_idx(str(tmp_path / "x.gz"))
    np.testing.assert_array_equal(got, values)
    floats = np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2)
    write_idx(str(tmp_path / "f"), floats)
    np.testing.assert_array_equal(read_idx(str(tmp_path / "f")), floats)


def test_find_idx_prefers_plain_then_gz_then_dotted(tmp_path):
    assert find_idx(str(tmp_path), "train-images-idx3-ubyte") is None
    (tmp_path / "train-images.idx3-ubyte").write_bytes(b"")
    assert find_idx(str(tmp_path), "train-images-idx3-ubyte").endswith("train-images.idx3-ubyte")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert find_idx(str(tmp_path), "train-images-idx3-ubyte").endswith("train-images-idx3-ubyte.gz")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"")
    assert find_idx(str(tmp_path), "train-images-idx3-ubyte").endswith("train-images-idx3-ubyte")


GOOD = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))


@pytest.mark.parametrize(
    "payload, gz, needle",
    [
        (GOOD[:-5], False, "truncated"),
        (GOOD + b"\0", False, "trailing bytes"),
        (b"\x08\x03" + GOOD[2:], False, "bad magic"),
        (GOOD[:2] + b"\x07" + GOOD[3:], False, "bad magic"),
        (GOOD[:2], False, "not an IDX file"),
        (GOOD[:9], False, "truncated IDX header"),
        (gzip.compress(GOOD)[:-12], False, "corrupt gzip"),
        (b"\x1f\x8b" + b"garbage" * 5, False, "corrupt gzip"),
        (GOOD[:-1], True, "truncated"),
    ],
    ids=["truncated", "trailing", "magic-first-bytes", "magic-type", "tiny", "short-header",
         "truncated-gzip", "garbage-gzip", "truncated-inside-gzip"],
)
def test_corrupt_files_raise_one_line_user_error(tmp_path, payload, gz, needle):
    path = write_bytes(tmp_path / "bad-idx3-ubyte", payload, gz)
    with pytest.raises(UserError) as error:
        read_idx(path)
    assert_one_line(error, path, needle)


def test_load_idx_split_checks_the_pair(tmp_path):
    images = np.zeros((3, 5, 5), dtype=np.uint8)
    write_bytes(tmp_path / "train-images-idx3-ubyte", idx_bytes(images))
    write_bytes(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 9], dtype=np.uint8)))
    got_images, got_labels = load_idx_split(str(tmp_path), "train")
    assert got_images.shape == (3, 5, 5) and got_labels.dtype == np.int64
    assert got_labels.tolist() == [0, 1, 9]

    write_bytes(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([0, 1], dtype=np.uint8)))
    with pytest.raises(UserError) as error:
        load_idx_split(str(tmp_path), "train")
    assert_one_line(error, "2 labels for 3 images", "train-labels-idx1-ubyte")

    write_bytes(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 12], dtype=np.uint8)))
    with pytest.raises(UserError) as error:
        load_idx_split(str(tmp_path), "train")
    assert_one_line(error, "labels must be in 0..9")

    write_bytes(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((3, 25), dtype=np.uint8)))
    with pytest.raises(UserError) as error:
        load_idx_split(str(tmp_path), "train")
    assert_one_line(error, "N x H x W", "train-images-idx3-ubyte")


def test_missing_file_names_folder_and_file(tmp_path):
    with pytest.raises(UserError) as error:
        load_idx_split(str(tmp_path), "t10k")
    assert_one_line(error, str(tmp_path), "t10k-images-idx3-ubyte[.gz]")
