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


def cpu_serving_dtype_name() -> str:
    """``"bfloat16"`` when this CPU computes bf16 natively (AVX512-BF16 or AMX), else ``"float32"``.

    Without those instructions bf16 matrix products are emulated; with them, on 2 cores of an
    AVX512-BF16 Xeon, a 5-token forward pass of SmolLM2-135M in bf16 with packed weights cost
    about one float32 token (``bench/generation.py``).
    """
    import torch

    native = any(getattr(torch.cpu, check, lambda: False)()
                 for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return "bfloat16" if native else "float32"
