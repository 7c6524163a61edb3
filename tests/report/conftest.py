import copy
from html.parser import HTMLParser

import pytest

from ..conftest import single_thread

FULL_REPORT = {
    "title": "taylor-vgg16 (quick)",
    "summary": "VGG16 pruned to a third of its MACs & quantized",
    "data": "fashion-mnist-32", "hardware": "AMD EPYC (2 cores)", "threads": 1, "seconds": 123.4,
    "table": [
        {"model": "original", "top1": 0.9123, "params": 1234567, "macs": 12345678, "size_bytes": 4937000,
         "packed_bytes": None, "latency_ms": {"float": 1.234, "int8": 0.98765, "binary": None}},
        {"model": "pruned <int8>", "top1": 0.90615, "params": 345678, "macs": 4012345, "size_bytes": 1390000,
         "packed_bytes": 1200000, "latency_ms": {"float": 0.6124, "int8": None, "binary": 0.1}},
    ],
    "stages": [
        {"recipe": "taylor-vgg16", "index": 1, "name": "train", "seconds": 12.3, "top1": 0.9123,
         "params": 1234567, "macs": 12345678, "size_bytes": 4937000, "summary": "10 epochs"},
        {"recipe": "taylor-vgg16", "index": 2, "name": "prune", "seconds": 40.1, "top1": 0.9061,
         "params": 345678, "macs": 4012345, "size_bytes": 1390000, "summary": "taylor, 4 rounds"},
    ],
    "pruning_rounds": [{"recipe": "taylor-vgg16", "stage": 2, "round": r, "top1": 0.9123 - 0.002 * r,
                        "macs": 12345678 - 2000000 * r, "params": 1234567 - 200000 * r} for r in range(4)],
    "channels": [{"layer": f"features.{3 * i}", "before": 64, "after": 20 + 4 * i} for i in range(6)],
    "sensitivity": {"criterion": "l1", "ratios": [0.25, 0.5, 0.75], "baseline_top1": 0.91, "images": 500,
                    "layers": [{"layer": f"features.{3 * i}", "channels": 64, "kept": [48, 32, 16],
                                "top1": [0.9 - 0.01 * i, 0.8 - 0.02 * i, 0.5 - 0.03 * i]} for i in range(4)]},
}

# The table of FULL_REPORT as the page must show it, written out by hand.
EXPECTED_CELLS = {
    "original": {"model": "original", "top1": "91.23%", "params": "1,234,567", "macs": "12,345,678",
                 "size_bytes": "4,937,000", "packed_bytes": "-", "latency_float": "1.234",
                 "latency_int8": "0.988", "latency_binary": "-"},
    "pruned <int8>": {"model": "pruned <int8>", "top1": "90.61%", "params": "345,678", "macs": "4,012,345",
                      "size_bytes": "1,390,000", "packed_bytes": "1,200,000", "latency_float": "0.612",
                      "latency_int8": "-", "latency_binary": "0.100"},
}


_one_thread = pytest.fixture(autouse=True)(single_thread)


@pytest.fixture
def full_report():
    return copy.deepcopy(FULL_REPORT)


class PageParser(HTMLParser):
    """Collects the results table (row data-model -> {data-key: text}), image sources,
    every href/src, tag names and section ids of a page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows, self.images, self.links, self.tags, self.ids = {}, [], [], [], []
        self._row = self._key = None
        self._text = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        for name in ("href", "src"):
            if name in attrs:
                self.links.append(attrs[name])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "tr" and "data-model" in attrs:
            self._row = attrs["data-model"]
            self.rows[self._row] = {}
        if tag == "td" and self._row is not None and "data-key" in attrs:
            self._key, self._text = attrs["data-key"], []

    def handle_data(self, data):
        if self._key is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._key is not None:
            self.rows[self._row][self._key] = "".join(self._text).strip()
            self._key = None
        elif tag == "tr":
            self._row = None


def parse_page(text: str) -> PageParser:
    parser = PageParser()
    parser.feed(text)
    parser.close()
    return parser
