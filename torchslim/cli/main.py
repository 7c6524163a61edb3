"""The ``torchslim`` command: one small module per verb, each adding its sub-parser."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import signal
import sys
import threading

from .. import __version__
from ..errors import UserError
from ..checks import check_applies, check_paths, given_dests
from ..flags.common import add_trust_arg

_NOT_VERBS = {"main", "common", "checks"}


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
        add_trust_arg(verb_parser)
    return parser


def _checked_args(argv):
    """Parse, then the checks every verb shares: flags that do nothing here, and the output paths."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    check_applies(args, given_dests(subparsers.choices[args.verb], argv[argv.index(args.verb) + 1:]))
    check_paths(args)
    return args


class _Interrupts:
    """Remembers a Ctrl-C: one that lands inside a C extension's import can surface later as
    another error (a half-initialised numpy raises AttributeError), which is still an interrupt."""

    seen = False

    @classmethod
    def handler(cls, signum, frame):
        cls.seen = True
        raise KeyboardInterrupt

    @classmethod
    def install(cls) -> None:
        cls.seen = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, cls.handler)


def main(argv=None) -> int:
    _Interrupts.install()
    try:
        args = _checked_args(argv)
        from ..io.serialize import trusting  # lazy: imports torch, which --help and usage errors do without

        with trusting(args.trust):
            code = int(args.run(args) or 0)
        if _Interrupts.seen:  # a Ctrl-C that a library's import swallowed: the outputs are whole (atomic writes)
            print("torchslim: interrupted", file=sys.stderr)
            return 130
        return code
    except UserError as exc:
        print("torchslim: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # also while torch is still importing: no traceback
        print("torchslim: interrupted", file=sys.stderr)
        return 130
    except Exception:
        if not _Interrupts.seen:
            raise
        print("torchslim: interrupted", file=sys.stderr)
        return 130
    finally:
        # Leave the torchrun process group before the interpreter exits: a gloo group still
        # alive at exit can abort its process ("terminate called without an active exception").
        # Only if it was imported: importing it here could re-enter a torch import that Ctrl-C cut short.
        distributed = sys.modules.get("torchslim.train.distributed")
        if distributed is not None:
            distributed.shutdown()


if __name__ == "__main__":
    sys.exit(main())
