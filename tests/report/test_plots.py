import io

from PIL import Image

from torchslim.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _image(data: bytes) -> Image.Image:
    assert data[:8] == PNG_SIGNATURE
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def _has_colour(image: Image.Image, hex_colour: str, minimum: int = 50, tolerance: int = 6) -> bool:
    """At least ``minimum`` pixels within ``tolerance`` (per channel) of the colour."""
    target = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    count = sum(n for n, rgb in image.getcolors(maxcolors=1 << 20)
                if max(abs(a - b) for a, b in zip(rgb, target)) <= tolerance)
    return count >= minimum


def test_every_figure_is_a_png(full_report):
    images = [_image(plots.rounds_png(full_report["pruning_rounds"])),
              _image(plots.size_png(full_report["stages"], full_report["table"])),
              _image(plots.channels_png(full_report["channels"])),
              _image(plots.sensitivity_png(full_report["sensitivity"]))]
    for image in images:
        assert image.width >= 600 and image.height >= 400
        assert len(image.getcolors(maxcolors=1 << 20)) > 50  # drawn, not blank


def test_channel_bars_show_before_in_grey_and_after_in_colour(full_report):
    image = _image(plots.channels_png(full_report["channels"]))
    assert _has_colour(image, "#c9ccd1", 500) and _has_colour(image, "#2f6fb0", 500)


def test_channel_figure_grows_with_the_number_of_layers():
    few = _image(plots.channels_png([{"layer": "a", "before": 8, "after": 4}]))
    many = _image(plots.channels_png([{"layer": f"l{i}", "before": 8, "after": 4} for i in range(30)]))
    assert many.width > few.width


def test_sensitivity_with_many_layers_puts_the_legend_outside(full_report):
    sweep = full_report["sensitivity"]
    sweep["layers"] = [dict(sweep["layers"][0], layer=f"block.{i}") for i in range(16)]
    wide = _image(plots.sensitivity_png(sweep))
    sweep["layers"] = sweep["layers"][:3]
    narrow = _image(plots.sensitivity_png(sweep))
    assert wide.width > narrow.width
    assert _has_colour(narrow, "#555555", 20)  # the dashed baseline


def test_rows_with_missing_values_are_skipped():
    image = _image(plots.rounds_png([{"recipe": "a", "round": 0, "top1": None, "macs": 5},
                                     {"recipe": "a", "round": 1, "top1": 0.5, "macs": 4e6}]))
    assert image.width > 0


def test_human_bytes():
    assert [plots.human_bytes(v) for v in (512, 2000, 1390000, 4.2e9)] == ["512 B", "2 kB", "1.39 MB", "4.2 GB"]
