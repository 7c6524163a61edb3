"""What the demo concludes from its table, on hand-written rows (exact arithmetic)."""

from argparse import Namespace

from torchslim.cli.demo import WIDTH, _run_folder, verdict, verdict_lines


def _row(name, top1, **latency):
    return {"model": name, "top1": top1, "latency_ms": {"float": None, "int8": None, "binary": None, **latency}}


TABLE = [
    _row("original", 0.90, float=2.0, int8=0.8, openvino_int8=0.5),
    _row("pruned", 0.89, float=1.0, int8=0.4, openvino_int8=0.4),
    _row("binary", 0.885, float=2.0, int8=0.8, openvino_int8=0.5, binary=0.25),
    _row("student", 0.8825, float=4.0, int8=1.6),
]


def test_verdict_compares_binary_with_the_fastest_int8_of_the_original():
    found = verdict(TABLE)
    assert found["best_int8_of_original"] == {"runtime": "OpenVINO int8", "ms": 0.5}
    assert found["binary_vs_best_int8"] == 2.0
    assert found["pruned_speedup"] == {"eager torch fp32": 2.0, "ONNX Runtime int8": 2.0, "OpenVINO int8": 1.25}
    assert found["max_top1_loss"] == 0.0175


def test_verdict_without_openvino_uses_onnx_runtime_and_says_slower():
    table = [dict(row, latency_ms={k: v for k, v in row["latency_ms"].items() if k != "openvino_int8"})
             for row in TABLE]
    table[2]["latency_ms"]["binary"] = 1.6
    found = verdict(table)
    assert found["best_int8_of_original"] == {"runtime": "ONNX Runtime int8", "ms": 0.8}
    assert found["binary_vs_best_int8"] == 0.5
    assert "OpenVINO int8" not in found["pruned_speedup"]
    lines = verdict_lines(found)
    assert lines[0].endswith("0.50x the speed of the original's best int8 (ONNX Runtime int8, 0.800 ms): SLOWER")
    assert lines[-1] == "largest top-1 loss of a compressed row: 1.75 points"


def test_recipe_folders_differ_by_baseline_width_and_budget():
    folders = {_run_folder("taylor", Namespace(width_mult=w, quick=q)) for w in (WIDTH, 0.5) for q in (False, True)}
    assert folders == {"taylor", "taylor-quick", "taylor-w0.5", "taylor-w0.5-quick"}
