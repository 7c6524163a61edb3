"""Training-step cost of quantization-aware training against float, timed interleaved.

    python benchmarks/quant_cost.py [--steps 20] [--threads 1] [--width 0.25]

One SGD step (forward, backward, update, latent-weight clipping) of vgg14 on a batch of
128 fashion-mnist-32-shaped images, for the float model and each method, in rotation
(float, method 1, method 2, ..., float, ...) so the machine's drift hits all alike.
Reports the median step time and its ratio to float from the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from common import OtherLoad, command_line, hardware, markdown_table, write_section

from torchslim import models
from torchslim.quant import QuantConfig, clip_latent_weights, quantize

METHODS = ["bnn", "xnor", "bwn", "twn", "dorefa", "hwgq-bwn"]


def step_fn(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clip_latent_weights(model)

    return step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--width", type=float, default=0.25)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = models.create("vgg14", width_mult=args.width)
    steps = {"float": step_fn(base)}
    steps.update({m: step_fn(quantize(base, QuantConfig(method=m))) for m in METHODS})
    x, y = torch.randn(128, 3, 32, 32), torch.randint(0, 10, (128,))
    times = {name: [] for name in steps}
    for name, step in steps.items():
        step(x, y)  # warm-up
    with OtherLoad() as load:
        for _ in range(args.steps):
            for name, step in steps.items():
                began = time.perf_counter()
                step(x, y)
                times[name].append(time.perf_counter() - began)
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    rows = [[name, f"{ms:.0f}", f"{ms / medians['float']:.2f}x"] for name, ms in medians.items()]
    busy = "; the milliseconds are indicative only" if load.busy else ""
    body = f"""## Quantization: training-step cost against float (vgg14 width {args.width})

Command: `{command_line()}`
Hardware: {hardware()}
Median of {args.steps} interleaved steps, batch 128, Adam, latent weights clipped after each step.
During the steps, {load.describe()}{busy}; the ratios come from one interleaved run.

{markdown_table(["model", "ms / step", "vs float"], rows)}
"""
    print(body)
    write_section("quant-cost", body)


if __name__ == "__main__":
    main()
