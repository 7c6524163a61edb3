import base64
import io
import os

import matplotlib
import pytest
from PIL import Image

from torchslim.errors import UserError
from torchslim.report import build_html, render_html

from .conftest import EXPECTED_CELLS, parse_page


def _decode(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))
    image.load()
    return image


def test_full_report_is_self_contained_with_four_figures(full_report, tmp_path):
    path = tmp_path / "report.html"
    assert render_html(full_report, str(path)) == str(path)
    text = path.read_text(encoding="utf-8")
    page = parse_page(text)
    assert len(page.images) == 4 and text.count("data:image/png;base64,") == 4
    for src in page.images:
        image = _decode(src)
        assert image.format == "PNG" and image.width >= 600 and image.height >= 300
    assert all(link.startswith("data:") for link in page.links), page.links
    assert "script" not in page.tags and "link" not in page.tags
    assert 'src="http' not in text and "href=" not in text and "@import" not in text and "url(" not in text
    assert {"figure-rounds", "figure-size", "figure-channels", "figure-sensitivity"} <= set(page.ids)
    assert os.listdir(tmp_path) == ["report.html"]  # the temporary file was renamed, not left behind


def test_every_table_cell_matches_the_dict(full_report, tmp_path):
    path = render_html(full_report, str(tmp_path / "r.html"))
    page = parse_page(open(path, encoding="utf-8").read())
    assert page.rows == EXPECTED_CELLS


def test_text_is_escaped(full_report):
    text = build_html({"title": "a <b>bold</b> & title", "table": full_report["table"]})
    assert "<b>" not in text and "a &lt;b&gt;bold&lt;/b&gt; &amp; title" in text
    assert "pruned <int8>" not in text and "pruned &lt;int8&gt;" in text


def test_title_and_table_only_leaves_the_rest_out(full_report, tmp_path):
    report = {"title": "just numbers", "table": full_report["table"]}
    text = open(render_html(report, str(tmp_path / "min.html")), encoding="utf-8").read()
    page = parse_page(text)
    assert page.images == [] and "data:image" not in text
    assert page.rows == EXPECTED_CELLS
    assert not [i for i in page.ids if i.startswith("figure-")]
    assert "Stages" not in text and "class=summary" not in text and "<h1>just numbers</h1>" in text


def test_empty_sections_are_left_out(full_report):
    full_report.update(stages=[], pruning_rounds=None, channels=[], sensitivity=None)
    page = parse_page(build_html(full_report))
    assert page.images == [] and page.rows == EXPECTED_CELLS


def test_only_sensitivity_gives_one_figure(full_report):
    report = {"title": "t", "table": [], "sensitivity": full_report["sensitivity"]}
    page = parse_page(build_html(report))
    assert len(page.images) == 1 and "figure-sensitivity" in page.ids and page.rows == {}


@pytest.mark.parametrize("report, message", [
    ({"table": []}, "title"),
    ({"title": "t"}, "table"),
    ({"title": "t", "table": [{"model": "m", "top1": "high"}]}, "top1"),
    ({"title": "t", "table": [{"model": "m", "latency_ms": 3.0}]}, "latency_ms"),
    ([], "dict"),
    ({"title": "t", "table": [], "channels": "features.0"}, "channels"),
    ({"title": "t", "table": [], "sensitivity": [0.5]}, "sensitivity"),
    ({"title": "t", "table": [], "stages": [{"name": "train", "seconds": "long"}]}, "seconds"),
])
def test_bad_report_is_a_user_error_and_writes_nothing(report, message, tmp_path):
    with pytest.raises(UserError, match=message):
        render_html(report, str(tmp_path / "bad.html"))
    assert os.listdir(tmp_path) == []


def test_drawing_leaves_global_matplotlib_state_alone(full_report):
    backend = matplotlib.get_backend()
    params = dict(matplotlib.rcParams)
    build_html(full_report)
    assert matplotlib.get_backend() == backend
    assert dict(matplotlib.rcParams) == params


def test_stage_table_shows_the_summary_or_else_the_command(full_report):
    full_report["stages"][1].pop("summary")
    full_report["stages"][1]["command"] = ["torchslim", "prune", "--ratio", "0.5"]
    text = build_html(full_report)
    assert "<td class=text>10 epochs</td>" in text and "<td class=text>torchslim prune --ratio 0.5</td>" in text
    assert "<td>40.1</td>" in text and "<td>90.61%</td>" in text
    for stage in full_report["stages"]:
        stage.pop("summary", None), stage.pop("command", None)
    assert "what it did" not in build_html(full_report)
