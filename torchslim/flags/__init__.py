"""The flags of every verb a recipe stage runs, in one place below both the command line and the recipes.

``torchslim.cli`` adds them to its sub-commands; :mod:`torchslim.pipeline.schema` reads the recipe
options (their types, choices and defaults) from :func:`verb_parser`.  Importing this package loads
no torch.
"""

from __future__ import annotations

import argparse

from .common import add_trust_arg
from .compress import add_compress_weights_flags, add_prune_flags
from .verbs import (add_distill_flags, add_export_flags, add_finetune_flags, add_import_flags, add_quantize_flags,
                    add_train_flags)

__all__ = ["STAGE_VERBS", "add_trust_arg", "verb_parser"]

# verb name -> the function that adds its flags to a parser
STAGE_VERBS = {
    "train": add_train_flags, "prune": add_prune_flags, "finetune": add_finetune_flags,
    "quantize": add_quantize_flags, "compress-weights": add_compress_weights_flags,
    "distill": add_distill_flags, "export": add_export_flags, "import": add_import_flags,
}


def verb_parser(verb: str) -> argparse.ArgumentParser:
    """A new parser holding exactly the flags of ``torchslim VERB``."""
    parser = argparse.ArgumentParser(prog=f"torchslim {verb}")
    STAGE_VERBS[verb](parser)
    add_trust_arg(parser)
    return parser
