"""Pick the device and dtype to run on: CUDA with bf16 when present, else CPU with float32."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Device:
    """Where to run.

    Attributes:
        name: a torch device string, ``"cuda"`` or ``"cpu"``.
        dtype_name: ``"bfloat16"`` on a GPU that supports it, else ``"float32"``.
    """

    name: str
    dtype_name: str

    @property
    def is_gpu(self) -> bool:
        """True on CUDA."""
        return self.name == "cuda"

    @property
    def dtype(self):
        """The ``torch.dtype`` of ``dtype_name``."""
        import torch

        return getattr(torch, self.dtype_name)


def pick_device(prefer: str | None = None) -> Device:
    """``prefer`` ("cpu" or "cuda") when given, else CUDA if available, else CPU.

    Raises:
        ValueError: ``prefer`` is "cuda" but no CUDA device is available.
    """
    import torch

    name = prefer or ("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device")
    bf16 = name == "cuda" and torch.cuda.is_bf16_supported()
    return Device(name, "bfloat16" if bf16 else "float32")
