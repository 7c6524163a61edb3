"""The documentation builds without a broken link, and README / BENCHMARKS.md say only what was measured."""

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from tests.conftest import REPO

README = os.path.join(REPO, "README.md")
BENCHMARKS = os.path.join(REPO, "BENCHMARKS.md")
HAS_MKDOCS = all(importlib.util.find_spec(m) is not None for m in ("mkdocs", "material", "mkdocstrings_handlers"))


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _sections(text):
    """{name: (title, body)} of the marked sections of a BENCHMARKS.md text."""
    found = {}
    for match in re.finditer(r"<!-- BEGIN (\S+) -->\n(.*?)<!-- END \1 -->", text, re.S):
        title = re.search(r"^## (.+)$", match.group(2), re.M)
        found[match.group(1)] = (title.group(1).strip() if title else None, match.group(2))
    return found


@pytest.mark.skipif(not HAS_MKDOCS, reason="mkdocs, mkdocs-material or mkdocstrings-python is not installed "
                                           "(pip install -e '.[docs]')")
def test_mkdocs_build_strict(tmp_path):
    # --strict turns every warning into a failure: a link to a missing page or anchor, a page left
    # out of the nav, an API reference that does not resolve.
    env = dict(os.environ, PYTHONPATH=REPO, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f",
                           os.path.join(REPO, "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from torchslim.cli.main import build_parser

    verbs = next(a for a in build_parser()._actions if a.dest == "verb").choices
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert len(verbs) >= 10
    for verb in verbs:  # the reference is generated from the parsers: every verb is there
        assert f"torchslim {verb}" in cli, verb
    assert "--target-macs" in cli and "--packed-side" in cli
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("torchslim.prune.prune", "torchslim.quant.quantize", "torchslim.export.save_packed"):
        assert f'id="{name}"' in api, name
    bench = (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert all(f'id="{name}"' in bench for name in _sections(_read(BENCHMARKS)))


def test_readme_links_resolve():
    text = _read(README)
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', _read(BENCHMARKS)))
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        assert os.path.exists(os.path.join(REPO, path)), link
        if anchor:
            assert path == "BENCHMARKS.md" and anchor in anchors, link


def test_readme_stays_short_and_keeps_the_setup_commands():
    text = _read(README)
    assert len(text.splitlines()) <= 200
    assert "```\nmake demo\n```" in text and "```\nmake test\n```" in text
    assert "mkdocs serve" in text


def _figures(cell_text):
    return re.findall(r"\d+(?:\.\d+)*", cell_text)


def _rows_with_links(text, pattern):
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            names = re.findall(pattern, line)
            if names:
                yield line, names


@pytest.mark.parametrize("path, pattern", [(README, r"\(BENCHMARKS\.md#([^)]+)\)"), (BENCHMARKS, r"\(#([^)]+)\)")])
def test_every_quoted_figure_is_in_the_section_it_links(path, pattern):
    # A figure in README's results table or in the summary of BENCHMARKS.md is copied from a section
    # a script wrote; when a rerun changes the section, this fails until the quote is updated.
    sections = _sections(_read(BENCHMARKS))
    rows = list(_rows_with_links(_read(path), pattern))
    assert len(rows) >= 5
    for line, names in rows:
        source = "".join(sections[name][0] + sections[name][1] for name in names)
        cells = re.sub(r"\[[^\]]*\]\([^)]*\)", "", line)  # link targets name sections, not figures
        missing = [f for f in _figures(cells) if f not in source]
        assert not missing, f"{missing} not in {names}: {line}"


def test_benchmarks_state_each_claim_once():
    text = _read(BENCHMARKS)
    sections = _sections(text)
    assert text.count("<!-- BEGIN ") == text.count("<!-- END ") == len(sections)
    titles = [title for title, _ in sections.values()]
    assert len(titles) == len(set(titles)), sorted(t for t in titles if titles.count(t) > 1)
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', text))
    linked = set(re.findall(r"\]\(#([^)]+)\)", text))
    assert set(sections) <= anchors and set(sections) <= linked  # every section reachable from the top


def _benchmarks_common():
    spec = importlib.util.spec_from_file_location("benchmarks_common", os.path.join(REPO, "benchmarks", "common.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_section_replaces_by_marker_then_by_title(tmp_path, monkeypatch):
    common = _benchmarks_common()
    target = tmp_path / "BENCHMARKS.md"
    target.write_text("# Benchmarks\n\nintro\n")
    monkeypatch.setattr(common, "BENCHMARKS_MD", str(target))
    common.write_section("a", "## Title A\n\nrun 1")
    common.write_section("b", "## Title B\n\nrun 1")
    common.write_section("a", "## Title A\n\nrun 2")
    text = target.read_text()
    assert "run 2" in text and text.count("## Title A") == 1 and text.index("Title A") < text.index("Title B")
    assert '<a id="a"></a>\n\n<!-- BEGIN a -->' in text and text.startswith("# Benchmarks\n\nintro\n")
    common.write_section("a-renamed", "## Title A\n\nrun 3")  # same claim under a new name: replaced
    text = target.read_text()
    assert text.count("## Title A") == 1 and "run 3" in text and "BEGIN a " not in text
    assert '<a id="a-renamed"></a>\n\n<!-- BEGIN a-renamed -->' in text and '<a id="a">' not in text
    common.write_section("c", "## Title A, another budget\n\nrun 1")  # a variant with its own title
    assert [name for name, _, _ in common.sections(target.read_text())] == ["a-renamed", "b", "c"]


def _documented_commands():
    texts = [_read(README)] + [_read(os.path.join(root, name)) for root, _, names in os.walk(os.path.join(REPO, "docs"))
                               for name in names if name.endswith(".md")]
    for text in texts:
        for block in re.findall(r"```\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith("torchslim ") and "..." not in line:
                    yield line


def test_documented_commands_parse():
    # Every `torchslim ...` line in README and the guides is accepted by today's parser.
    from torchslim.cli.main import build_parser

    commands = list(_documented_commands())
    assert len(commands) >= 20
    parser = build_parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command)[1:])
        except SystemExit as exc:
            pytest.fail(f"{command!r} does not parse (exit {exc.code})")


def test_pictures_redraw_from_benchmarks(tmp_path):
    # The pictures are drawn from the sections' tables; a section whose table changed shape breaks this.
    spec = importlib.util.spec_from_file_location("benchmarks_plots", os.path.join(REPO, "benchmarks", "plots.py"))
    plots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plots)
    assert plots.main(["--out", str(tmp_path)]) == 0
    for name in plots.PLOTS:
        assert (tmp_path / name).stat().st_size > 10_000
        assert os.path.exists(os.path.join(REPO, "docs", "img", name)), f"docs/img/{name} is not checked in"
    text = _read(BENCHMARKS)
    ratios = dict(plots.compression_ratios(plots.sections(text)))
    # The packed table has three "ratio" columns; the picture shows the exact one, after "f32 / f32".
    lines = plots.sections(text)["quant-compression"].splitlines()
    row = next(line for line in lines if line.startswith("| vgg14 | 1.0 |"))
    header = [c.strip() for c in lines[lines.index(row) - 2].strip("|").split("|")]
    assert ratios["HWGQ + BWN packed\nvgg14 w1.0"] == row.strip("|").split("|")[header.index("f32 / f32") + 1].strip()
    assert f"**{ratios['Deep Compression' + chr(10) + 'lenet300'].removesuffix('x')}x**" in text


def test_documented_imports_resolve():
    # Every import line of the Python examples in README and the guides names something that exists.
    texts = [_read(README)] + [_read(os.path.join(root, name)) for root, _, names in os.walk(os.path.join(REPO, "docs"))
                               for name in names if name.endswith(".md")]
    imports = sorted({line.strip() for text in texts for block in re.findall(r"```python\n(.*?)```", text, re.S)
                      for line in block.splitlines() if re.match(r"\s*(from \S+ )?import ", line)})
    assert len(imports) >= 15
    for line in imports:
        exec(line, {})  # noqa: S102 - our own documentation's import lines, nothing else
