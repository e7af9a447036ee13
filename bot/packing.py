"""Linear layers with weights prepacked for MKL's sgemm at a fixed number of input rows (CPU).

A draft check of speculative decoding (:mod:`bot.speculative`) runs the model on a few tokens
at once. For so few rows, ``torch.nn.functional.linear`` repacks every weight matrix on every
call: the linear layers of SmolLM2-135M (its 211 weight shapes, run one after another) took
~1.7x as long for 5 rows as for 1 on 2 CPU cores, and ~1.3x with the weights packed once for 5
rows. End to end, ``bench/generation.py`` measured 1.1-1.25x the tokens/s of drafts alone.
This is the packing torch.compile's freezing pass applies on CPU (``torch._inductor.fx_passes.mkldnn_fusion``, the
ops ``torch.ops.mkl._mkl_reorder_linear_weight`` and ``torch.ops.mkl._mkl_linear``). Calls with
any other row count fall back to the plain weight inside the same op.

Cost: a second, packed copy of every linear weight (memory of the model's linear layers, x2).
"""

from __future__ import annotations

import torch


def packing_available() -> bool:
    """True when this torch build has the MKL packed-linear ops (x86 CPU builds)."""
    return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")


class PackedLinear(torch.nn.Module):
    """A float32 ``torch.nn.Linear`` whose weight is also packed for ``rows`` input rows.

    Args:
        linear: the layer (its weight and bias are shared, not copied).
        rows: the row count (tokens per forward pass, batch 1) the packing is for.

    Call: ``x [..., in_features] -> [..., out_features]``; exact same math as the linear layer
    (rounding may differ in the last bits when ``x`` has ``rows`` rows).
    """

    def __init__(self, linear: torch.nn.Linear, rows: int):
        super().__init__()
        self.weight, self.bias, self.rows = linear.weight, linear.bias, rows
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("packed", torch.ops.mkl._mkl_reorder_linear_weight(linear.weight.detach(), rows),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        out = torch.ops.mkl._mkl_linear(flat, self.packed, self.weight, self.bias, self.rows)
        return out.reshape(*x.shape[:-1], self.out_features)


def pack_linears(model: torch.nn.Module, rows: int) -> int:
    """Replace every float32 ``nn.Linear`` of ``model`` (in place) by a :class:`PackedLinear`.

    Returns:
        How many layers were replaced (0 when :func:`packing_available` is False).
    """
    if not packing_available():
        return 0
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32:
                setattr(parent, name, PackedLinear(child, rows))
                replaced += 1
    return replaced
