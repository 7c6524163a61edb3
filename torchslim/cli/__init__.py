"""Command-line interface; see :mod:`torchslim.cli.main`."""
