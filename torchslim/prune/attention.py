"""Rules for transformer-style blocks: functional layer norm, ``nn.MultiheadAttention``,
torchvision's shifted-window attention and patch merging, and attention traced op by op
(timm's ``Attention``: a reshape splits the qkv output into heads, see
:mod:`~torchslim.prune.shapes`; ``scaled_dot_product_attention`` or ``q @ k^T``, softmax,
``@ v``; a reshape merges the heads back).

Attention heads: the query, key and value projections of a head are sliced at the same
positions, and position ``j`` of every head is one channel unit (as a grouped conv couples
position ``j`` of every group), so a pruned layer keeps its number of heads with a smaller
head dimension.  These attention layers require the inner width to equal the input
width, so the input positions are coupled with the projection positions.  Pruning then
changes the 1/sqrt(head_dim) scale, so unlike a conv channel a zero channel here is not
free to remove exactly.
"""

from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from .rules import (Rule, at_dim, channel_dim, couple_heads, cut, module_path, node_slots,
                    register_function_rule, register_rule, register_width_attribute)

__all__ = ["MultiheadAttentionRule"]


def _shape(meta):
    meta = meta.meta.get("tensor_meta") if isinstance(meta, fx.Node) else meta
    shape = getattr(meta, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _arg(node, index, name, default=None):
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _inputs(graph, node):
    return [node_slots(graph, a) for a in (*node.args, *node.kwargs.values())]


def _last(slots, shape) -> bool:
    return isinstance(slots, list) and shape is not None and channel_dim(slots) == len(shape) - 1


def _layer_norm(graph, node, meta):
    """``F.layer_norm(x, shape, weight, bias)`` over the channels: the parameters are cut with them."""
    source = node.args[0]
    slots, shape = graph.slots.get(source.name), _shape(source)
    normalized = _arg(node, 1, "normalized_shape")
    if not isinstance(slots, list) or shape is None or not isinstance(normalized, (list, tuple)):
        return graph.boundary(_inputs(graph, node), meta, "layer_norm of a tensor without channels")
    if channel_dim(slots) < len(shape) - len(normalized):
        return slots  # normalised over dimensions after the channels
    if len(normalized) != 1:
        return graph.boundary(_inputs(graph, node), meta, "layer_norm over the channels and other dimensions")
    for param in (_arg(node, 2, "weight"), _arg(node, 3, "bias")):
        if isinstance(param, fx.Node):
            if param.name not in graph.params:
                return graph.boundary(_inputs(graph, node), meta, "layer_norm with computed weights")
            graph.add_param(param.name, 0, slots)
    return slots


class MultiheadAttentionRule(Rule):
    """``nn.MultiheadAttention`` with one embedding width for query, key and value."""

    any_dim = True

    def trace(self, graph, name, module, inputs, in_metas, out_meta):
        shapes = [_shape(m) for m in in_metas[:3]]
        if (len(inputs) < 3 or not module._qkv_same_embed_dim or module.bias_k is not None
                or not all(_last(s, shape) for s, shape in zip(inputs[:3], shapes))):
            return graph.boundary(inputs, out_meta, "MultiheadAttention with separate key/value widths")
        query = inputs[0]
        for other in inputs[1:3]:
            graph.couple(query, other)
        couple_heads(graph, query, module.num_heads)
        graph.add_member(name, "in", query)
        graph.add_member(name, "out", graph.new_channels(module.out_proj.out_features))
        graph.attribute_macs(name, (name,))
        out = at_dim(graph.members[(name, "out")].slots, len(_shape(out_meta[0])) - 1)
        return (out, None)

    def prune_out(self, module, keep):
        cut(module.out_proj, "weight", keep, 0)
        cut(module.out_proj, "bias", keep, 0)
        module.out_proj.out_features = len(keep)

    def prune_in(self, module, keep):
        width = module.embed_dim
        rows = torch.cat([keep + i * width for i in range(3)])
        cut(module, "in_proj_weight", rows, 0)
        cut(module, "in_proj_weight", keep, 1)
        cut(module, "in_proj_bias", rows, 0)
        cut(module.out_proj, "weight", keep, 1)
        module.out_proj.in_features = len(keep)
        module.embed_dim = module.kdim = module.vdim = len(keep)
        module.head_dim = len(keep) // module.num_heads


def _linear_owner(graph, node, index, name):
    """The module path of a Linear whose weight the function reads, or None."""
    arg = _arg(node, index, name)
    path = graph.params.get(arg.name) if isinstance(arg, fx.Node) else None
    if path is None or not path.endswith(".weight"):
        return None
    owner = path[: -len(".weight")]
    return owner if isinstance(graph.model.get_submodule(owner), nn.Linear) else None


def _window_attention(graph, node, meta):
    """torchvision's ``shifted_window_attention(x, qkv.weight, proj.weight, ...)``."""
    source = node.args[0]
    slots = graph.slots.get(source.name) if isinstance(source, fx.Node) else None
    qkv, proj = _linear_owner(graph, node, 1, "qkv_weight"), _linear_owner(graph, node, 2, "proj_weight")
    heads = _arg(node, 5, "num_heads")
    if not _last(slots, _shape(source)) or qkv is None or proj is None or not isinstance(heads, int):
        return graph.boundary(_inputs(graph, node), meta, "window attention without its projections")
    couple_heads(graph, slots, heads)
    graph.add_member(qkv, "in", slots)
    graph.add_member(qkv, "out", slots * 3)
    graph.add_member(proj, "in", slots)
    graph.add_member(proj, "out", graph.new_channels(graph.model.get_submodule(proj).out_features))
    graph.attribute_macs(qkv.rpartition(".")[0], (qkv, proj))
    return at_dim(graph.members[(proj, "out")].slots, len(_shape(meta)) - 1)


def _patch_merging(graph, node, meta):
    """torchvision's ``_patch_merging_pad``: (N, H, W, C) -> (N, H/2, W/2, 4C), four shifted copies."""
    source = node.args[0]
    slots = graph.slots.get(source.name) if isinstance(source, fx.Node) else None
    out_shape = _shape(meta)
    if not _last(slots, _shape(source)) or out_shape is None or out_shape[-1] != 4 * len(slots):
        return graph.boundary(_inputs(graph, node), meta, "patch merging of a tensor without channels")
    return at_dim(list(slots) * 4, len(out_shape) - 1)


def _attribute_products(graph, node) -> None:
    """The attention products are counted in the module that computes them: their MACs
    scale with its layers seen so far (the qkv projection)."""
    owner = module_path(node)
    layers = sorted({m.module for m in graph.members.values() if m.module.startswith(owner + ".")})
    if owner and layers:
        graph.attribute_macs(owner, layers)


def _operand(graph, arg):
    """(slots, shape) of a tensor argument; slots None where it has no channels."""
    slots = graph.slots.get(arg.name) if isinstance(arg, fx.Node) else None
    return (slots if isinstance(slots, list) else None), _shape(arg)


def _sdpa(graph, node, meta):
    """``scaled_dot_product_attention(q, k, v)``: q and k are contracted over their last dim,
    so their channels there are coupled; the result carries v's."""
    q, k, v = (_arg(node, i, name) for i, name in enumerate(("query", "key", "value")))
    (sq, q_shape), (sk, k_shape), (sv, v_shape) = (_operand(graph, t) for t in (q, k, v))
    out_shape = _shape(meta)
    if (not all(_last(s, shape) for s, shape in ((sq, q_shape), (sk, k_shape), (sv, v_shape)))
            or out_shape is None or len(out_shape) != len(v_shape)):
        return graph.boundary(_inputs(graph, node), meta, "attention on tensors without channels in the last dim")
    graph.couple(sq, sk)
    graph.pin([node_slots(graph, a) for a in (*node.args[3:], *node.kwargs.values())])  # a mask
    _attribute_products(graph, node)
    return sv


def _matmul(graph, node, meta):
    """``a @ b`` contracts a's last dim with b's second-to-last: channels on both are coupled
    and leave none in the result (``q @ k.transpose(-2, -1)``).  b's channels in its last dim
    (``attn @ v``) or a's in its rows are the result's; channels anywhere else are pinned."""
    (sa, a_shape), (sb, b_shape) = (_operand(graph, t) for t in node.args[:2])
    out_shape = _shape(meta)
    if a_shape is None or b_shape is None or out_shape is None or min(len(a_shape), len(b_shape)) < 2:
        return graph.boundary(_inputs(graph, node), meta, "matmul of vectors")
    a_dim = None if sa is None else channel_dim(sa) - len(a_shape)
    b_dim = None if sb is None else channel_dim(sb) - len(b_shape)
    if (a_dim == -1) != (b_dim == -2):
        return graph.boundary(_inputs(graph, node), meta, "matmul contracting the channels with another dim")
    result = None
    if a_dim == -1:
        graph.couple(sa, sb)
        sa = sb = None
    elif b_dim == -1:
        result, sb = at_dim(sb, len(out_shape) - 1), None
    elif a_dim == -2:
        result, sa = at_dim(sa, len(out_shape) - 2), None
    graph.pin([sa, sb])  # channels in a batch dim, or a's rows beside b's columns
    _attribute_products(graph, node)
    return result if result is not None else graph.new_channels(out_shape[1], pinned=True)


register_rule(nn.MultiheadAttention, MultiheadAttentionRule())
register_function_rule(F.layer_norm, _layer_norm, any_dim=True)
register_function_rule("torchvision.models.swin_transformer.shifted_window_attention", _window_attention,
                       any_dim=True)
register_function_rule("torchvision.models.swin_transformer._patch_merging_pad", _patch_merging, any_dim=True)
for _target in (operator.matmul, torch.matmul, torch.bmm, "matmul", "bmm"):
    register_function_rule(_target, _matmul, any_dim=True)
register_function_rule(F.scaled_dot_product_attention, _sdpa, any_dim=True)
register_width_attribute("torchvision.models.vision_transformer.VisionTransformer", "hidden_dim")
# timm reshapes qkv to (B, N, 3, num_heads, head_dim) and the heads back to (B, N, attn_dim);
# its 1/sqrt(head_dim) scale is a float fixed at construction and stays
register_width_attribute("timm.layers.attention.Attention", "head_dim", "attn_dim")
