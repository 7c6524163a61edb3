"""The saved description covers the top module's own tensors and attributes, and ModuleList."""

import torch
from torch import nn

from torchslim.io.spec import apply_description, describe_modules


class _Tokens(nn.Module):
    """A ViT-like top module: its own class token and width, blocks in a ModuleList."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.width = width
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.blocks = nn.ModuleList([nn.Linear(width, width), nn.Linear(width, width)])

    def forward(self, x):
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x.reshape(x.shape[0], -1, self.width)], 1)
        for block in self.blocks:
            x = block(x)
        return x[:, 0]


def _narrowed() -> _Tokens:
    model = _Tokens()
    model.width = 4
    model.class_token = nn.Parameter(torch.zeros(1, 1, 4))
    model.blocks[0] = nn.Linear(4, 4)
    model.blocks[1] = nn.Linear(4, 4)
    return model


def test_a_narrowed_top_module_is_rebuilt_with_its_shapes():
    records = describe_modules(_narrowed())
    assert records[0] == ["", f"{__name__}._Tokens", {"attrs": {"width": 4}, "tensors": {"class_token": [1, 1, 4]}}]
    assert ["blocks", "nn.ModuleList", {}] in records
    rebuilt = apply_description(_Tokens(), records)
    assert rebuilt.width == 4 and rebuilt.class_token.shape == (1, 1, 4)
    assert [block.in_features for block in rebuilt.blocks] == [4, 4]
    assert rebuilt(torch.randn(2, 3, 4)).shape == (2, 4)


def test_a_top_module_without_tensors_adds_no_record():
    assert all(path for path, _, _ in describe_modules(nn.Sequential(nn.Linear(2, 2))))
