"""Reshapes that split the channels into groups: attention traced op by op (the qkv output
reshaped into heads, the heads sliced at the same positions, the reshape back; timm's
ViT/DeiT pruned through it) and a functional channel shuffle."""

import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchslim.errors import UserError
from torchslim.prune import PruneConfig, build_graph, prune, remove_channels
from torchslim.prune.rules import qualified_name, register_width_attribute

from .thirdparty import build_source, import_torchvision, reload_in_fresh_process


class _HeadAttention(nn.Module):
    """timm's pattern: ``qkv(x).reshape(B, N, 3, heads, head_dim)``, unbind, optional q/k
    LayerNorm over the head dim, fused or explicit attention, ``reshape(B, N, attn_dim)``."""

    def __init__(self, dim=8, heads=3, head_dim=5, fused=True, qk_norm=False):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_dim = heads, head_dim, heads * head_dim
        self.scale = head_dim ** -0.5
        self.fused = fused
        self.qkv = nn.Linear(dim, 3 * self.attn_dim)
        self.q_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(self.attn_dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused:
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj(x)


register_width_attribute(qualified_name(_HeadAttention), "head_dim", "attn_dim")


class _Net(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.attn = _HeadAttention(**kwargs)

    def forward(self, x):
        return self.attn(x)


def _heads_group(graph, qkv="attn.qkv"):
    return next(g for g in graph.groups if (qkv, "out") in {(m.module, m.role) for m in g.members})


def _net(seed=0, **kwargs):
    torch.manual_seed(seed)
    model = _Net(**kwargs).eval()
    with torch.no_grad():
        for norm in (model.attn.q_norm, model.attn.k_norm):
            if isinstance(norm, nn.LayerNorm):
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.uniform_(-0.5, 0.5)
    return model


def _example(dtype=torch.float32):
    return torch.randn(2, 7, 8, dtype=dtype, generator=torch.Generator().manual_seed(1))


def _prune_positions(model, drop):
    """The pruned copy without head positions ``drop``, and the positions kept."""
    graph = build_graph(model, _example()[:1])
    assert graph.boundaries == []
    group = _heads_group(graph)
    roles = {(m.module, m.role) for m in group.members}
    assert {("attn.qkv", "out"), ("attn", "=head_dim"), ("attn", "=attn_dim"), ("attn.proj", "in")} <= roles
    assert len(group) == model.attn.head_dim  # position j of every head (and of q, k, v) is one unit
    qkv = next(p for m, p in zip(group.members, group.positions) if (m.module, m.role) == ("attn.qkv", "out"))
    units = [next(u for u, where in enumerate(qkv) if position in where) for position in drop]
    pruned = remove_channels(model, {group.index: units}, _example()[:1]).model
    kept = [d for d in range(model.attn.head_dim) if d not in drop]
    return pruned.double(), kept


def _check_shapes(pruned, heads, kept):
    attn = pruned.attn
    assert (attn.num_heads, attn.head_dim, attn.attn_dim) == (heads, len(kept), heads * len(kept))
    assert attn.qkv.out_features == 3 * heads * len(kept) and attn.qkv.weight.shape[0] == 3 * heads * len(kept)
    assert attn.proj.in_features == attn.attn_dim and attn.proj.weight.shape[1] == attn.attn_dim


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
@pytest.mark.parametrize("heads", [3, 1])
def test_zero_head_positions_are_removed_exactly(fused, heads):
    """Positions whose q, k and v rows and proj columns are zero add nothing to the scores
    nor the output: the pruned copy equals the original, up to the 1/sqrt(head_dim) of the
    fused path, which the original then runs with explicitly."""
    model = _net(fused=fused, heads=heads)
    drop = [1, 3]
    attn, size = model.attn, model.attn.head_dim
    with torch.no_grad():
        rows = [g * size + d for g in range(3 * heads) for d in drop]
        attn.qkv.weight[rows] = 0
        attn.qkv.bias[rows] = 0
        attn.proj.weight[:, [h * size + d for h in range(heads) for d in drop]] = 0
    pruned, kept = _prune_positions(model, drop)
    _check_shapes(pruned, heads, kept)
    model.double()
    x = _example(torch.float64)
    with torch.no_grad():
        got = pruned(x)
        attn.fused, attn.scale = False, (len(kept) ** -0.5 if fused else attn.scale)
        expected = model(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert got.abs().max() > 1e-3


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "explicit"])
def test_qk_norm_heads_match_the_weights_sliced_by_hand(fused):
    """With a LayerNorm over the head dim nothing is free to remove; the pruned copy equals
    a model built with the kept head positions sliced out of every weight by hand."""
    model = _net(fused=fused, qk_norm=True)
    heads, size = model.attn.num_heads, model.attn.head_dim
    pruned, kept = _prune_positions(model, [0, 4])
    _check_shapes(pruned, heads, kept)
    assert pruned.attn.q_norm.normalized_shape == (len(kept),) and pruned.attn.k_norm.weight.shape == (len(kept),)
    by_hand = _net(fused=fused, qk_norm=True, head_dim=len(kept))
    old, new = model.attn, by_hand.attn
    rows = [g * size + d for g in range(3 * heads) for d in kept]
    with torch.no_grad():
        new.qkv.weight.copy_(old.qkv.weight[rows])
        new.qkv.bias.copy_(old.qkv.bias[rows])
        for name in ("q_norm", "k_norm"):
            getattr(new, name).weight.copy_(getattr(old, name).weight[kept])
            getattr(new, name).bias.copy_(getattr(old, name).bias[kept])
        new.proj.weight.copy_(old.proj.weight[:, [h * size + d for h in range(heads) for d in kept]])
        new.proj.bias.copy_(old.proj.bias)
    new.scale = old.scale  # the explicit path keeps its float scale
    model.double(), by_hand.double()
    x = _example(torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), by_hand(x), rtol=0, atol=1e-12)


class _Split(nn.Module):
    """Splits the qkv output into heads by ``inner``, merges them back by ``merged``."""

    def __init__(self, inner, merged):
        super().__init__()
        self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)
        self.inner, self.merged = inner, merged

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, 2, self.inner).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, self.merged))


def test_a_split_into_a_constant_that_follows_nothing_stays_a_one_line_boundary():
    model = _Split(4, 8).eval()  # no width attribute registered for _Split
    graph = build_graph(model, torch.randn(1, 5, 8))
    assert graph.boundaries[0] == "reshape (call_method reshape): reshape that splits the channels into " \
        "a constant channel count (4)"
    assert all(("qkv", "out") not in {(m.module, m.role) for m in g.members} for g in graph.groups)
    with pytest.raises(UserError) as error:
        build_graph(model, torch.randn(1, 5, 8), strict=True)
    assert "node 'reshape'" in str(error.value) and "\n" not in str(error.value)
    # sizes read at run time follow the pruning: prunable, four units of two heads
    free = _Split(-1, -1).eval()
    graph = build_graph(free, torch.randn(1, 5, 8))
    assert graph.boundaries == []
    group = _heads_group(graph, "qkv")
    assert len(group) == 4 and ("proj", "in") in {(m.module, m.role) for m in group.members}
    pruned = remove_channels(free, {group.index: [0, 2]}, torch.randn(1, 5, 8)).model
    assert pruned.qkv.out_features == 12 and pruned.proj.in_features == 4
    assert pruned(torch.randn(2, 5, 8)).shape == (2, 5, 8)


def _channel_shuffle(x, groups: int):
    """torchvision's ShuffleNetV2 shuffle: sizes read at run time, split, transpose, merge."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous()
    return x.view(batch, channels, height, width)


class _Shuffled(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        x = _channel_shuffle(F.relu(self.bn(self.conv(x))), 2)
        return self.fc(self.conv2(x).mean((2, 3)))


def test_a_functional_channel_shuffle_prunes_exactly():
    torch.manual_seed(0)
    model = _Shuffled().eval()
    example = torch.randn(1, 3, 6, 6)
    graph = build_graph(model, example)
    assert graph.boundaries == []
    group = _heads_group(graph, "conv")
    assert len(group) == 4  # channel j of both groups of four is one unit
    assert {(m.module, m.role) for m in group.members} == {("conv", "out"), ("bn", "out"), ("conv2", "in")}
    conv = next(p for m, p in zip(group.members, group.positions) if m.module == "conv")
    assert sorted(map(sorted, conv)) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    removed = [1, 2]
    for member, positions in zip(group.members, group.positions):
        if member.role == "out":  # zero what is removed: the cut is then exact
            module = model.get_submodule(member.module)
            module.weight.data[[p for u in removed for p in positions[u]]] = 0
            module.bias.data[[p for u in removed for p in positions[u]]] = 0
    pruned = remove_channels(model, {group.index: removed}, example).model
    assert pruned.conv.out_channels == 4 and pruned.conv2.in_channels == 4
    x = torch.randn(3, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned.double()(x), model.double()(x), rtol=0, atol=1e-12)


TIMM_MODELS = ("timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224")


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("source", TIMM_MODELS)
def test_timm_attention_is_sliced_by_head(source):
    import_torchvision()  # timm imports torchvision; the CPU wheel needs its schemas first
    pytest.importorskip("timm")
    model, shape = build_source(source)
    before = _state(model)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, *shape, generator=generator)
    with torch.no_grad():
        expected = model(x)
    config = PruneConfig(criterion="l2", target_macs=0.5, scope="global", recalibrate_bn=False)
    result = prune(model, config, [(x, torch.tensor([0, 1]))], example_inputs=x[:1])
    assert result.macs_after <= 0.5 * result.macs_before * (1 + 1e-3)
    pruned = result.model
    blocks = [(old.attn, new.attn) for old, new in zip(model.blocks, pruned.blocks)]
    for old, new in blocks:
        assert new.num_heads == old.num_heads
        assert new.qkv.out_features == 3 * new.num_heads * new.head_dim == new.qkv.weight.shape[0]
        assert new.proj.in_features == new.attn_dim == new.num_heads * new.head_dim == new.proj.weight.shape[1]
    assert any(new.qkv.out_features < 576 for _, new in blocks)
    with torch.no_grad():
        assert pruned(x).shape == expected.shape
        assert torch.equal(model(x), expected)
    after = _state(model)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with tempfile.TemporaryDirectory() as folder:
        assert reload_in_fresh_process(pruned, x, folder) is None
