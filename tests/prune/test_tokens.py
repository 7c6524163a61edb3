"""Channels outside dimension 1: channels-last blocks, layer norm, layer scale, tokens and
attention heads; grouped convs that keep one channel per group; stable messages."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import UserError
from torchslim.prune import build_graph, remove_channels


class _LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) map (a subclass with its own forward)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _Block(nn.Module):
    """ConvNeXt-style: depthwise conv, channels-last LayerNorm and MLP, layer scale, residual."""

    def __init__(self, dim):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.norm(y)))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class _ConvNeXtish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 2, stride=2)
        self.norm = _LayerNorm2d(8)
        self.block = _Block(8)
        self.head = nn.Linear(8, 3)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        return self.head(self.block(self.norm(self.stem(x))).mean((2, 3)))


def _group_with(graph, module, role="out"):
    return next(g for g in graph.groups if (module, role) in {(m.module, m.role) for m in g.members})


def test_channels_last_block_couples_layer_norm_layer_scale_and_residual():
    torch.manual_seed(0)
    model = _ConvNeXtish().eval()
    graph = build_graph(model)
    assert graph.boundaries == []
    stream = _group_with(graph, "stem")
    roles = {(m.module, m.role) for m in stream.members}
    assert {("norm", "weight@0"), ("block.norm", "out"), ("block", "gamma@0"), ("block.fc2", "out"),
            ("block.fc1", "in"), ("head", "in")} <= roles
    assert len(_group_with(graph, "block.fc1")) == 32  # the MLP's hidden channels
    pruned = remove_channels(model, {stream.index: [0, 5], _group_with(graph, "block.fc1").index: list(range(20))})
    net = pruned.model
    assert net.norm.normalized_shape == (6,) and net.norm.weight.shape == (6,)
    assert net.block.norm.normalized_shape == (6,) and net.block.gamma.shape == (6,)
    assert net.block.dw.groups == 6 and net.block.fc1.out_features == 12 and net.head.in_features == 6
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 3)


class _Tokens(nn.Module):
    """ViT-style: patch conv, flatten/transpose to tokens, class token, positional embedding,
    multi-head attention, MLP, the class token read out."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 5, dim))
        self.ln = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 16), nn.GELU(), nn.Linear(16, dim))
        self.head = nn.Linear(dim, 3)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        y = self.ln(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        x = x + self.mlp(x)
        return self.head(x[:, 0])


def test_tokens_heads_class_token_and_positional_embedding_are_cut_together():
    torch.manual_seed(0)
    model = _Tokens().eval()
    graph = build_graph(model)
    assert graph.boundaries == []
    stream = _group_with(graph, "patch")
    roles = {(m.module, m.role) for m in stream.members}
    assert {("", "cls@2"), ("", "pos@2"), ("ln", "out"), ("attn", "in"), ("attn", "out"), ("head", "in")} <= roles
    assert len(stream) == 4  # position j of both heads is one unit: 8 channels, 2 heads
    pruned = remove_channels(model, {stream.index: [1]}).model
    assert pruned.attn.embed_dim == 6 and pruned.attn.head_dim == 3 and pruned.attn.num_heads == 2
    assert pruned.cls.shape == (1, 1, 6) and pruned.pos.shape == (1, 5, 6)
    assert pruned.attn.in_proj_weight.shape == (18, 6)
    assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_grouped_conv_keeping_one_channel_per_group_stays_grouped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.ReLU(),
                          nn.Conv2d(8, 4, 1)).eval()
    example = torch.randn(1, 3, 8, 8)
    graph = build_graph(model, example)
    into, out = _group_with(graph, "0"), _group_with(graph, "2")
    assert len(into) == 2 and len(out) == 2  # coupled across the four groups
    for group, unit in ((into, 1), (out, 0)):  # zero what is removed: the cut is then exact
        for member, positions in zip(group.members, group.positions):
            if member.role == "out":
                module = model.get_submodule(member.module)
                module.weight.data[positions[unit]] = 0
                module.bias.data[positions[unit]] = 0
    pruned = remove_channels(model, {into.index: [1], out.index: [0]}, example).model
    conv = pruned[2]
    assert (conv.groups, conv.in_channels, conv.out_channels) == (4, 4, 4)
    assert conv.weight.shape == (4, 1, 3, 3)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-6)


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.input_shape = (3, 4, 4)

    def forward(self, x):
        return torch.cumsum(self.conv(x), 1)


def test_messages_name_ops_by_qualified_name_without_addresses():
    messages = []
    for _ in range(2):
        with pytest.raises(UserError) as error:
            build_graph(_Cumsum(), strict=True)
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert "torch.cumsum" in messages[0] and "0x" not in messages[0] and "\n" not in messages[0]


class _ScaledConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.gamma = nn.Parameter(torch.rand(6) + 0.5)
        self.fc = nn.Linear(6, 2)
        self.input_shape = (3, 8, 8)

    def forward(self, x):
        return self.fc((self.conv(x) * self.gamma.reshape(1, -1, 1, 1)).mean((2, 3)))


def test_a_reshaped_parameter_scale_is_cut_with_the_channels_exactly():
    torch.manual_seed(0)
    model = _ScaledConv().eval()
    graph = build_graph(model)
    group = graph.groups[0]
    assert {(m.module, m.role) for m in group.members} == {("conv", "out"), ("", "gamma@0"), ("fc", "in")}
    with torch.no_grad():
        model.conv.weight[[1, 4]] = 0
        model.conv.bias[[1, 4]] = 0
    pruned = remove_channels(model, {0: [1, 4]}).model
    assert pruned.gamma.shape == (4,)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(pruned(x), model(x), rtol=0, atol=1e-6)
