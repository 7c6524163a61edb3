"""Draw the pictures of README and the documentation from the sections of BENCHMARKS.md.

    python benchmarks/plots.py                 # writes docs/img/*.png

The figures are read from the tables the benchmark scripts wrote (never typed in), so rerunning a
benchmark and then this script keeps the pictures in step with BENCHMARKS.md:

* ``prune-accuracy.png``: top-1 against MACs kept, torchslim and Torch-Pruning, from the pruning
  sections;
* ``speedup.png``: speed-up at batch 1 per runtime, from the binary-kernel and pruning sections;
* ``compression.png``: file compression of each technique, from its section.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRUNE_SECTIONS = {"prune_accuracy_vgg14_w0.5_e8": "vgg14 width 0.5, 8 epochs",
                  "prune_accuracy_vgg14_e15": "vgg14 width 0.25, 15 epochs"}


def sections(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"<!-- BEGIN (\S+) -->\n(.*?)<!-- END \1 -->", text, re.S)}


def tables(body: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of a section, as rows of {header: cell}."""
    found, lines = [], body.splitlines()
    for i in range(len(lines) - 1):
        if lines[i].startswith("|") and lines[i + 1].startswith("|---"):
            header = []
            for cell in (c.strip() for c in lines[i].strip("|").split("|")):
                repeats = sum(1 for h in header if h == cell or h.startswith(cell + " #"))
                header.append(cell if not repeats else f"{cell} #{repeats + 1}")  # "ratio", "ratio #2", ...
            rows = []
            for line in lines[i + 2:]:
                if not line.startswith("|"):
                    break
                rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
            found.append(rows)
    return found


def number(cell: str) -> float:
    return float(re.search(r"[-+]?\d+(?:\.\d+)?", cell.replace(",", "")).group(0))


def table_with(body: str, column: str) -> list[dict[str, str]]:
    return next(t for t in tables(body) if t and column in t[0])


def plot_prune_accuracy(found: dict[str, str], path: str) -> None:
    fig, axes = plt.subplots(1, len(PRUNE_SECTIONS), figsize=(10, 3.8))
    for ax, (name, label) in zip(axes, PRUNE_SECTIONS.items()):
        body = found[name]
        base = number(re.search(r"top-1 (\d\.\d+)", body.split("Base:", 1)[1]).group(1))
        for tool, marker in (("torchslim", "o"), ("Torch-Pruning", "s")):
            rows = [r for r in table_with(body, "top-1") if r["tool"] == tool and r["MACs target"] != "-"]
            ax.scatter([number(r["MACs kept"]) for r in rows], [number(r["top-1"]) for r in rows],
                       marker=marker, label=tool, alpha=0.8)
        ax.axhline(base, color="grey", linestyle="--", linewidth=1, label=f"unpruned ({base:.4f})")
        ax.set(title=label, xlabel="share of MACs kept", ylabel="top-1 (fashion-mnist-32)")
        ax.legend(fontsize=8)
    fig.suptitle("Pruning: accuracy against MACs kept (BENCHMARKS.md)", fontsize=10)
    _save(fig, path)


def plot_speedup(found: dict[str, str], path: str) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    rows = [r for r in table_with(found["kernels-binary"], "vs ORT f32") if r["threads"] == "1"]
    names = [r["network"].replace("vgg14 w1.0 ", "") for r in rows]
    width = 0.38
    xs = range(len(rows))
    left.bar([x - width / 2 for x in xs], [number(r["vs ORT f32"]) for r in rows], width, label="vs ONNX Runtime float32")
    left.bar([x + width / 2 for x in xs], [number(r["vs ORT int8"]) for r in rows], width, label="vs ONNX Runtime int8")
    left.set_xticks(list(xs), names, fontsize=8)
    left.set(title="binary kernels, vgg14 width 1.0, 1 thread", ylabel="speed-up at batch 1")
    left.legend(fontsize=8)
    body = found["prune_accuracy_vgg14_w0.5_e8"]
    rows = [r for r in table_with(body, "speed-up, ORT") if r["MACs target"] != "-" and "seed" not in r["criterion (selection)"]]
    labels = [f"{r['tool']}\n{r['MACs target']} MACs" + ("\n+ params target" if "params <=" in r["criterion (selection)"] else "")
              for r in rows]
    xs = range(len(rows))
    for offset, column, label in ((-0.27, "speed-up", "eager torch"), (0, "speed-up, BN folded", "eager, BN folded"),
                                  (0.27, "speed-up, ORT", "ONNX Runtime")):
        right.bar([x + offset for x in xs], [number(r[column]) for r in rows], 0.27, label=label)
    right.set_xticks(list(xs), labels, fontsize=7)
    right.set(title="pruned vgg14 width 0.5, batch 1, 1 thread", ylabel="speed-up over the unpruned model")
    right.legend(fontsize=8)
    fig.suptitle("Speed-up per runtime (BENCHMARKS.md)", fontsize=10)
    _save(fig, path)


def compression_ratios(found: dict[str, str]) -> list[tuple[str, str]]:
    """(label, ratio as the section writes it) per technique."""
    bars = []
    for model in ("lenet300", "lenet5-caffe", "lenet5"):
        match = re.search(rf"\*\*{re.escape(model)}\*\*: .*?\*\*([\d.]+)x\*\*", found["backend-deep-compression"])
        bars.append((f"Deep Compression\n{model}", match.group(1) + "x"))
    packed = next(r for r in table_with(found["quant-compression"], "f32 / f32") if r["model"] == "vgg14" and r["width"] == "1.0")
    bars.append(("HWGQ + BWN packed\nvgg14 w1.0", packed["ratio"]))
    qcnn = next(r for r in table_with(found["backend-qcnn"], "bits/weight") if r["model"] == "vgg14" and r["method"] == "qcnn")
    bars.append((f"Q-CNN {qcnn['bits/weight'].split(' (')[0]} bit\nvgg14 w0.25", qcnn["ratio"]))
    pruned = [r for r in table_with(found["prune_accuracy_vgg14_e15"], "file smaller")
              if r["tool"] == "torchslim" and r["MACs target"] == "22%"]
    bars.append(("channel pruning 22% MACs\nvgg14 w0.25", pruned[0]["file smaller"]))
    return bars


def plot_compression(found: dict[str, str], path: str) -> None:
    bars = compression_ratios(found)
    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.bar(range(len(bars)), [number(b[1]) for b in bars], color="tab:green")
    for x, (_, ratio) in enumerate(bars):
        ax.text(x, number(ratio), ratio, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set(ylabel="float32 file / compressed file", title="Compression of each technique (BENCHMARKS.md)")
    _save(fig, path)


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


PLOTS = {"prune-accuracy.png": plot_prune_accuracy, "speedup.png": plot_speedup, "compression.png": plot_compression}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmarks", default=os.path.join(ROOT, "BENCHMARKS.md"))
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "img"), help="folder for the PNG files")
    args = parser.parse_args(argv)
    with open(args.benchmarks, encoding="utf-8") as handle:
        found = sections(handle.read())
    os.makedirs(args.out, exist_ok=True)
    for name, draw in PLOTS.items():
        draw(found, os.path.join(args.out, name))
        print(os.path.join(args.out, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
