"""The page as a real browser draws it: a screenshot that is not blank, and the same
table values in the DOM Chromium builds."""

import os
import shutil
import subprocess

import pytest
from PIL import Image

from torchslim.report import render_html

from .conftest import EXPECTED_CELLS, parse_page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")

WIDTH, HEIGHT = 1280, 2400


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = dict(os.environ, HOME=str(home))
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},{HEIGHT}", *args]
    # stderr carries harmless dbus / GPU warnings: only the exit code and the output count
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from .conftest import FULL_REPORT

    folder = tmp_path_factory.mktemp("chromium")
    return folder, render_html(FULL_REPORT, str(folder / "report.html"))


def test_screenshot_is_drawn(page):
    folder, path = page
    shot = folder / "shot.png"
    proc = _chromium(folder, f"--screenshot={shot}", f"file://{path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    image = Image.open(shot)
    image.load()
    assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    colours = image.convert("RGB").getcolors(maxcolors=1 << 22)
    assert len(colours) > 1000, "too few colours: the figures were not drawn"
    background = max(colours)[0]
    white = sum(n for n, rgb in colours if min(rgb) >= 250)
    total = WIDTH * HEIGHT
    assert background < 0.9 * total  # one colour does not fill the page
    assert white < 0.95 * total and total - white > 0.2 * total


def test_dom_holds_the_table_values(page):
    folder, path = page
    proc = _chromium(folder, "--dump-dom", f"file://{path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = parse_page(proc.stdout)
    assert dom.rows == EXPECTED_CELLS
    assert len(dom.images) == 4 and all(src.startswith("data:image/png;base64,") for src in dom.images)
