"""The ``torchslim`` command: one small module per verb, each adding its sub-parser."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from .. import __version__
from ..errors import UserError

_NOT_VERBS = {"main", "common"}


def verb_modules() -> list[str]:
    """Every module of this package but the helpers is a verb with ``add_parser``.

    A new technique adds ``cli/<verb>.py`` and nothing else changes here (``import_.py`` holds
    the ``import`` verb, whose name is a Python keyword).
    """
    names = [m.name for m in pkgutil.iter_modules([os.path.dirname(os.path.abspath(__file__))])]
    return sorted(n for n in names if n not in _NOT_VERBS and not n.startswith("_"))


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit code 2."""

    def error(self, message):
        verb = self.prog.split(" ", 1)[1:]  # "torchslim train" -> "train: "; the top parser names no verb
        self.exit(2, f"torchslim: error: {''.join(v + ': ' for v in verb)}{message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="torchslim", description="Make a trained PyTorch network smaller and faster.")
    parser.add_argument("--version", action="version", version=f"torchslim {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    subparsers.required = True
    for verb in verb_modules():
        importlib.import_module(f"torchslim.cli.{verb}").add_parser(subparsers)
    for verb_parser in subparsers.choices.values():  # every verb that loads a file may need it
        verb_parser.add_argument("--trust", action="append", default=[], metavar="PKG",
                                 help="allow importing PKG to rebuild a model made from your own code "
                                      "(PKG.MODULE:CALLABLE); files never import anything else")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from ..io.serialize import trusting  # imports torch, which --help and usage errors do without

        with trusting(args.trust):
            return int(args.run(args) or 0)
    except UserError as exc:
        print("torchslim: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("torchslim: interrupted", file=sys.stderr)
        return 130
    finally:
        # Leave the torchrun process group before the interpreter exits: a gloo group still
        # alive at exit can abort its process ("terminate called without an active exception").
        from ..train.distributed import shutdown

        shutdown()


if __name__ == "__main__":
    sys.exit(main())
