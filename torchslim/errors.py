"""User-facing errors.

A ``UserError`` is a problem with the caller's input (unknown name, missing file,
impossible value).  The CLI prints it as one line, ``torchslim: error: ...``, and
exits with code 2.  Anything else is a bug and may show a traceback.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """Bad input from the user: reported as one line, exit code 2."""


def unknown_choice(kind: str, value: str, choices) -> UserError:
    """Build a UserError for an unknown name, with the valid choices and a guess."""
    choices = sorted(choices)
    guess = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" (did you mean {guess[0]!r}?)" if guess else ""
    return UserError(f"unknown {kind} {value!r}{hint}; choose from: {', '.join(choices)}")
