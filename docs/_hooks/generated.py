"""Pages made at build time, so they cannot drift from what they describe.

- ``reference/cli.md``: every ``torchslim`` sub-command, rendered from the argparse parser the
  command itself builds (``torchslim.cli.main.build_parser``);
- ``benchmarks.md`` and ``benchmarks/history/*.md``: BENCHMARKS.md and its history files,
  copied from the repository root as they are.

The docstrings' Sphinx roles (``:func:`save```) are shown as plain code.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys

from mkdocs.structure.files import File

MARKER = "<!-- cli-reference -->"


def _root(config) -> str:
    return os.path.dirname(os.path.abspath(config.config_file_path))


def on_config(config):
    # Import the torchslim of this checkout, not whichever one is installed.
    root = _root(config)
    if root not in sys.path:
        sys.path.insert(0, root)
    return config


def on_files(files, config):
    root = _root(config)
    copies = {"benchmarks.md": os.path.join(root, "BENCHMARKS.md")}
    for path in sorted(glob.glob(os.path.join(root, "benchmarks", "history", "*.md"))):
        copies["benchmarks/history/" + os.path.basename(path)] = path
    for uri, path in copies.items():
        with open(path, encoding="utf-8") as handle:
            files.append(File.generated(config, uri, content=handle.read()))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "reference/cli.md":
        return markdown.replace(MARKER, cli_reference())
    return markdown


_ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|obj):<code>(~?)([^<]+)</code>")


def on_page_content(html, page, config, files):
    # Docstrings use Sphinx cross-reference roles; show their target as plain code.
    return _ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html)


def cli_reference() -> str:
    os.environ["COLUMNS"] = "88"  # argparse wraps usage lines to the terminal; fix the width
    from torchslim.cli.main import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help or "" for a in verbs._choices_actions}
    parts = []
    for name, sub in verbs.choices.items():
        parts.append(_render_verb(name, sub, summaries.get(name, "")))
    return "\n".join(parts)


def _render_verb(name: str, parser: argparse.ArgumentParser, summary: str) -> str:
    lines = [f"## `torchslim {name}`", ""]
    text = parser.description or summary
    if text:
        lines += [_escape(text), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    rows = [_row(parser, action) for action in parser._actions if not isinstance(action, argparse._HelpAction)]
    if rows:
        lines += ["| argument | default | description |", "|---|---|---|", *rows, ""]
    if parser.epilog:
        lines += [_escape(parser.epilog), ""]
    return "\n".join(lines)


def _row(parser, action) -> str:
    if action.option_strings:
        metavar = "" if action.nargs == 0 else " " + parser._get_formatter()._format_args(action, action.dest.upper())
        names = ", ".join(f"`{o}{metavar}`" for o in action.option_strings)
    else:
        names = f"`{action.metavar or action.dest}`"
    default = action.default
    shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else f"`{default}`"
    help_text = parser._get_formatter()._expand_help(action) if action.help else ""
    notes = [help_text] if help_text else []
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        notes.append("choices: " + ", ".join(f"`{c}`" for c in action.choices))
    if action.required and action.option_strings:
        notes.append("required")
    help_text = "; ".join(notes)
    return f"| {names} | {shown} | {_escape(help_text)} |"


def _escape(text: str) -> str:
    # One table cell: pipes split cells outside code spans only (inside, a backslash would show).
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("|", "\\|").replace("<", "&lt;")
    return "`".join(parts)
