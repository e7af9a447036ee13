"""Linear layers whose weights are reordered once into oneDNN's blocked layout (CPU serving).

On 2 CPU cores ``torch.nn.functional.linear`` reorders (packs) every weight matrix on every call
when the input has a few rows, as a draft check of speculative decoding (:mod:`bot.speculative`)
does: the linear layers of SmolLM2-135M took ~1.5x as long for 5 rows as for 1. With the weights
packed once for 5 rows (oneDNN, the ops ``torch.ops.mkldnn._reorder_linear_weight`` and
``torch.ops.mkldnn._linear_pointwise`` that torch.compile's freezing pass uses on CPU,
``torch._inductor.fx_passes.mkldnn_fusion``) they took ~1.25x in float32, and in bfloat16 5 rows
cost about what 1 row of plain float32 does (timings of those layers' 211 weight shapes and of
whole forward passes; end to end see ``bench/generation.py``). The packed weight replaces
the plain one, so memory does not grow, and it serves any number of rows.
"""

from __future__ import annotations

import torch


def packing_available() -> bool:
    """True when this torch build has oneDNN (mkldnn) and its packed linear ops (x86/ARM CPU builds)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class PackedLinear(torch.nn.Module):
    """A ``torch.nn.Linear`` (float32 or bfloat16) with its weight packed by oneDNN.

    Args:
        linear: the layer; its weight is reordered into a new tensor (the layer itself is not
            kept), its bias is shared.
        rows: the row count (tokens per forward pass, batch 1) the layout is tuned for; any other
            count still works.

    Call: ``x [..., in_features] -> [..., out_features]`` in ``linear``'s dtype; the same math as
    the linear layer, rounded in another order (float32 results differ in the last bits).
    Inference only: the packed weight has no gradient and cannot be saved or moved.
    """

    def __init__(self, linear: torch.nn.Linear, rows: int):
        super().__init__()
        self.in_features, self.out_features, self.rows = linear.in_features, linear.out_features, rows
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")


def pack_linears(model: torch.nn.Module, rows: int) -> int:
    """Replace (in place) every float32 or bfloat16 ``nn.Linear`` of ``model`` by a
    :class:`PackedLinear`, except the output embedding (``lm_head``, often tied to the input
    embedding, whose weight must stay plain).

    Returns:
        How many layers were replaced (0 when :func:`packing_available` is False).
    """
    if not packing_available():
        return 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child is not head and \
                    child.weight.dtype in (torch.float32, torch.bfloat16):
                setattr(parent, name, PackedLinear(child, rows))
                replaced += 1
    return replaced
