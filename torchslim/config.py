"""Shared behaviour of the option dataclasses (TrainConfig, PruneConfig, QuantConfig, ...).

``to_dict`` / ``from_dict`` make every config one vocabulary for the CLI flags,
the recipes and saved metadata; an unknown key is a one-line UserError with the
valid names and a "did you mean".
"""

from __future__ import annotations

from dataclasses import asdict, fields

from .errors import unknown_choice


class ConfigMixin:
    """Mix into a ``@dataclass``; set ``option_kind`` to name the options in errors."""

    option_kind = "option"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in fields(cls)}
        for key in data:
            if key not in names:
                raise unknown_choice(cls.option_kind, key, names)
        return cls(**data)
