"""The results table's latency columns name the runtime that ran each model."""

import re

from torchslim.report import build_html
from torchslim.report.format import shown_columns, text_table

from .conftest import parse_page

RUNTIME_HEADINGS = ["eager torch fp32", "ONNX Runtime int8", "OpenVINO int8", "torchslim binary kernels"]


def _headings(page: str) -> list[str]:
    """The results table's column headings (the latency group's own heading left out)."""
    results = page[page.index("<table id=results>"):page.index("</thead>")]
    return [h for h in re.findall(r"<th(?: [^>]*)?>([^<]*)</th>", results) if not h.startswith("latency (")]


def test_latency_columns_are_headed_by_their_runtime(full_report):
    page = build_html(full_report)
    headings = _headings(page)
    assert headings[6:] == ["eager torch fp32", "ONNX Runtime int8", "torchslim binary kernels"]
    assert "colspan=3>latency (ms, batch 1)" in page
    assert not {"float", "int8", "binary"} & set(headings)


def test_openvino_column_appears_only_where_it_was_timed(full_report, tmp_path):
    assert "latency_openvino_int8" not in [key for key, *_ in shown_columns(full_report["table"])]
    full_report["table"][1]["latency_ms"]["openvino_int8"] = 0.4567
    full_report["runtimes"] = {"openvino_int8": "OpenVINO int8 (openvino 2026.4.1, NNCF; kernels brgconv_avx512_I8)",
                               "binary": "torchslim binary kernels (compiled, avx512-vpopcntdq path)"}
    page = build_html(full_report)
    assert _headings(page)[6:] == RUNTIME_HEADINGS
    assert "colspan=4>latency (ms, batch 1)" in page
    rows = parse_page(page).rows
    assert rows["pruned <int8>"]["latency_openvino_int8"] == "0.457"
    assert rows["original"]["latency_openvino_int8"] == "-"
    assert "<li>torchslim binary kernels (compiled, avx512-vpopcntdq path)</li>" in page


def test_text_table_names_runtimes_and_aligns(full_report):
    full_report["table"][0]["latency_ms"]["openvino_int8"] = 0.75
    text = text_table(full_report["table"], {"binary": "torchslim binary kernels (compiled, portable path)"})
    lines = text.splitlines()
    head = lines[0]
    positions = [head.index(title) for title in RUNTIME_HEADINGS]
    assert positions == sorted(positions)  # runtime columns in table order
    assert lines[1].replace(" ", "").strip("-") == ""
    assert len({len(line) for line in lines[:4]}) == 1  # header, rule and the two rows line up
    original = lines[2].split()
    assert original[0] == "original" and original[1] == "91.23%"
    assert original[-4:] == ["1.234", "0.988", "0.750", "-"]
    assert lines[3].split()[-4:] == ["0.612", "-", "-", "0.100"]
    assert lines[-1] == "  torchslim binary kernels (compiled, portable path)"


def test_text_table_leaves_out_the_openvino_column_when_not_timed(full_report):
    text = text_table(full_report["table"])
    assert "OpenVINO" not in text and "ONNX Runtime int8" in text
    assert text.splitlines()[2].split()[-3:] == ["1.234", "0.988", "-"]
