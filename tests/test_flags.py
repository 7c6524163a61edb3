"""The verbs' flags live below the CLI and the recipes: both read the same parsers."""

import argparse
import subprocess
import sys

import pytest

from torchslim import flags
from torchslim.cli import compress_weights
from torchslim.cli.main import build_parser
from torchslim.flags import verbs
from torchslim.flags.compress import WEIGHT_METHODS
from torchslim.quant import ACT_SCALES, QUANT_METHODS


def _cli_parsers():
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices


def _signature(parser):
    return [(tuple(a.option_strings), a.dest, a.default, a.choices and tuple(a.choices), a.required, a.help,
             getattr(a.type, "__qualname__", a.type))
            for a in parser._actions]


@pytest.mark.parametrize("verb", sorted(flags.STAGE_VERBS))
def test_stage_parser_is_the_cli_parser(verb):
    ours, theirs = flags.verb_parser(verb), _cli_parsers()[verb]
    assert _signature(ours) == _signature(theirs)
    defaults = {k: v for k, v in theirs._defaults.items() if k != "run"}
    assert ours._defaults == defaults


def test_weight_methods_are_the_verbs_compressors():
    assert list(WEIGHT_METHODS) == sorted(compress_weights.COMPRESSORS)


def test_importing_the_flags_loads_no_torch():
    code = "import sys, torchslim.flags; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_act_scale_choices_are_the_quantization_verbs():
    assert verbs.ACT_SCALES == ACT_SCALES


def test_quantize_methods_are_the_quantizers_plus_int8():
    QUANTIZE_METHODS = verbs.QUANTIZE_METHODS
    assert set(QUANTIZE_METHODS) - {"int8"} <= set(QUANT_METHODS) and "int8" in QUANTIZE_METHODS
