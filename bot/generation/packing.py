"""Linear layers whose weights are reordered once into oneDNN's blocked layout (CPU serving).

On 2 CPU cores ``torch.nn.functional.linear`` reorders (packs) every weight matrix on every call
when the input has a few rows, as a draft check of speculative decoding (:mod:`bot.generation.speculative`)
does: the linear layers of SmolLM2-135M took ~1.5x as long for 5 rows as for 1. With the weights
packed once for 5 rows (oneDNN, the ops ``torch.ops.mkldnn._reorder_linear_weight`` and
``torch.ops.mkldnn._linear_pointwise`` that torch.compile's freezing pass uses on CPU,
``torch._inductor.fx_passes.mkldnn_fusion``) they took ~1.25x in float32, and in bfloat16 5 rows
cost about what 1 row of plain float32 does (timings of those layers' 211 weight shapes and of
whole forward passes; end to end see ``bench/generation.py``). The packed weight replaces
the plain one and serves any number of rows; the process's RSS still grew (bf16: +30 MiB for the
serving process after loading, ``bench/serve_memory.py``; +200 MiB for the generator alone;
float32, which serving does not pack: +780 MiB), as freed plain weights are not all returned to
the system.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


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
        How many layers were replaced: 0 when :func:`packing_available` is False, or when this
        CPU's oneDNN cannot pack the dtype (e.g. bf16 without AVX512-BW/VL/DQ; a warning is
        logged and the model keeps its plain weights).
    """
    if not packing_available():
        return 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    layers = [(parent, name, child) for parent in list(model.modules()) for name, child in parent.named_children()
              if type(child) is torch.nn.Linear and child is not head
              and child.weight.dtype in (torch.float32, torch.bfloat16)]
    try:  # one layer first, so that a CPU without the kernel leaves the model untouched
        first = PackedLinear(layers[0][2], rows) if layers else None
    except RuntimeError as exc:
        log.warning("weights not packed (%s)", str(exc).splitlines()[0])
        return 0
    for index, (parent, name, child) in enumerate(layers):
        setattr(parent, name, first if index == 0 else PackedLinear(child, rows))
    return len(layers)
