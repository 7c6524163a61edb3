"""Images per second of a streamed image folder at 224 px, timed interleaved.

    python benchmarks/data_stream.py [--photos 64] [--rounds 3] [--workers 2]

Writes JPEG photos of two sizes (1600x1250, a camera photo, and 500x375, a typical
ImageNet file) to a temporary folder and reads each set through ``BatchLoader``
(batch 32) in rotation:

* evaluation preprocessing (shorter side to 256, centre 224) in the main process;
* the same with ``--workers`` decoding processes;
* training preprocessing (random resized crop, flip) with ``--workers`` processes;
* the naive reading for reference: every JPEG decoded at full size, then resized and
  cropped by Pillow (what a plain ``Image.open(...).convert("RGB")`` pipeline does),
  in the main process.

Reports the median images per second of each and the ratios from the same run.

    python benchmarks/data_stream.py --memory [--photos 50,200]

Memory instead of speed: for each count, writes that many 1600x1250 JPEG photos per class (2 classes,
6 MB each decoded), trains one epoch at 128 px with 2 decoding workers and evaluates, in a fresh process,
and reports the peak resident memory of the main process and of the largest worker beside the decoded
size of the folder (section ``data-stream-memory``).  Memory is not timing: a busy machine does not change it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from common import OtherLoad, command_line, hardware, markdown_table, write_section

from tests.data.test_data_stream_memory import train_and_evaluate  # the test's own measurement
from tests.data.test_data_stream_memory import write_photos as write_large_photos
from torchslim.data import BatchLoader, load_dataset
from torchslim.data.preprocess import center_crop_box, shorter_side_size

SIZES = {"1600x1250": (1600, 1250), "500x375": (500, 375)}
BATCH = 32


def write_photos(root: str, size: tuple[int, int], count: int) -> None:
    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], 2) * 200
    block = max(4, width // 32)
    noise = rng.integers(0, 40, (height // block + 1, width // block + 1, 3)).repeat(block, 0).repeat(block, 1)
    for k in range(2):
        os.makedirs(os.path.join(root, f"class{k}"))
        for i in range(count // 2):
            shifted = np.roll(noise, 7 * i, axis=1)[:height, :width]
            Image.fromarray((base + shifted).astype(np.uint8)).save(os.path.join(root, f"class{k}", f"{i}.jpg"),
                                                                      quality=90)


def naive_pass(files) -> int:
    """Full-size decode, then the same resize and crop, one image at a time."""
    for path in files.paths:
        with Image.open(path) as image:
            image = image.convert("RGB")
            target = shorter_side_size(*image.size, files.resize_size)
            image = image.resize(target, Image.Resampling.BILINEAR).crop(center_crop_box(*target, 224))
            np.asarray(image)
    return len(files.paths)


def loader_pass(files, workers: int, augment: bool) -> int:
    loader = BatchLoader(files, BATCH, shuffle=augment, augment=augment, workers=workers)
    return sum(len(y) for _, y in loader)


def measure(files, workers: int, rounds: int) -> dict[str, list[float]]:
    ways = {
        "eval, main process": lambda: loader_pass(files, 0, False),
        f"eval, {workers} workers": lambda: loader_pass(files, workers, False),
        f"train (crop + flip), {workers} workers": lambda: loader_pass(files, workers, True),
        "naive full decode, main process": lambda: naive_pass(files),
    }
    rates = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            began = time.perf_counter()
            count = run()
            rates[name].append(count / (time.perf_counter() - began))
    return rates


def memory(counts: list[int]) -> None:
    """Peak memory of a training epoch and an evaluation over folders of growing decoded size."""
    rows = []
    for per_class in counts:
        with tempfile.TemporaryDirectory(prefix="torchslim-stream-") as folder:
            decoded = write_large_photos(os.path.join(folder, "photos"), per_class)
            result = train_and_evaluate(os.path.join(folder, "photos"), timeout=3600)
        mb = 1e-6
        rows.append([2 * per_class, f"{decoded * mb:,.0f}", result["train"], result["test"],
                     f"{result['self_peak'] * mb:,.0f}", f"{(result['self_peak'] - result['before']) * mb:,.0f}",
                     f"{result['worker_peak'] * mb:,.0f}", f"{result['epoch_top1']:.3f}"])
        print(rows[-1], flush=True)
    body = "\n".join([
        "## Streamed image folders: memory of a training epoch and an evaluation",
        "",
        f"`{command_line()}`  ",
        f"{hardware()}.  ",
        "1600x1250 JPEG photos in 2 classes (split 80/20), read at 128 px by 2 decoding worker processes, batch 16; "
        "one epoch of a small conv net, then an evaluation, in a fresh process. Peak resident memory "
        "(ru_maxrss) of the main process, its growth from before the data was opened, and of the largest "
        "worker, in MB. The peaks stay flat while the folder's decoded size grows.",
        "",
        markdown_table(["photos", "decoded MB", "train", "test", "main peak MB", "main growth MB",
                        "worker peak MB", "top-1 after 1 epoch"], rows),
    ])
    write_section("data-stream-memory", body)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", default="64", help="photos per size (split 80/20; the test split is read); "
                        "with --memory: photos per class, comma-separated counts")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="peak memory of training over growing folders")
    args = parser.parse_args()
    if args.memory:
        memory([int(n) for n in (args.photos if args.photos != "64" else "50,200").split(",")])
        return
    args.photos = int(args.photos)
    rows = []
    with tempfile.TemporaryDirectory(prefix="torchslim-stream-") as folder, OtherLoad() as load:
        for label, size in SIZES.items():
            root = os.path.join(folder, label)
            write_photos(root, size, args.photos)
            files = load_dataset("folder", "train", root=root, image_size=224)
            rates = measure(files, args.workers, args.rounds)
            reference = statistics.median(rates["eval, main process"])
            for name, values in rates.items():
                median = statistics.median(values)
                rows.append([label, name, f"{median:.0f}", f"{median / reference:.2f}x"])
                print(f"{label:>10}  {name:<36} {median:7.0f} img/s  {median / reference:.2f}x")
    busy = f"{load.cores:.1f} cores busy with other work during the run" if load.cores is not None else "load unknown"
    body = "\n".join([
        "## Streamed image folders: images per second at 224 px",
        "",
        f"`{command_line()}`  ",
        f"{hardware()}; {busy}.  ",
        f"Batches of {BATCH}, {args.photos * 4 // 5} JPEG photos per size, median of {args.rounds} interleaved rounds. "
        "Ratios are to the evaluation pipeline in the main process, from the same run.",
        "",
        markdown_table(["photo", "reading", "images/s", "ratio"], rows),
    ])
    write_section("data-stream", body)


if __name__ == "__main__":
    main()
