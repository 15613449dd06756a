"""The training precision segmend picks when a config does not set one: the fastest the hardware runs well."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

#: Floating-point types that mixed precision computes in; :func:`fp32` lifts them to float32.
LOW_PRECISION = (torch.float16, torch.bfloat16)

#: CPU flags (Linux ``/proc/cpuinfo``) of the instructions that run bf16 matrix products natively.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """A Lightning ``precision`` value and why it was chosen."""

    precision: str
    reason: str

    def __str__(self) -> str:
        return f"precision {self.precision}: {self.reason}"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` cannot be read, e.g. off Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def auto_precision(accelerator: str = "auto", cpuinfo: Path = Path("/proc/cpuinfo")) -> PrecisionChoice:
    """Pick the precision for ``accelerator`` on this machine.

    * CUDA GPU with bf16 (Ampere and newer): ``bf16-mixed``; without bf16: ``16-mixed``.
    * CPU with AMX or AVX512-BF16: ``bf16-mixed`` (autocast runs convolutions and matrix products
      in bf16; segmend keeps losses, confidence statistics and metrics in fp32).
    * Anything else: ``32-true``.

    Args:
        accelerator: The Trainer's ``accelerator`` setting (``"auto"``, ``"cpu"``, ``"gpu"``, ``"cuda"``, ...).
        cpuinfo: Where the CPU flags are read from (a parameter for tests).

    Returns:
        The choice and a one-line reason.

    """
    accelerator = str(accelerator or "auto").lower()
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16-mixed", f"the GPU ({name}) runs bf16")
        return PrecisionChoice("16-mixed", f"the GPU ({name}) has no bf16, so fp16 mixed precision")
    if accelerator not in ("auto", "cpu"):
        return PrecisionChoice("32-true", f"accelerator {accelerator!r} is not one segmend picks a precision for")
    found = sorted(set(CPU_BF16_FLAGS) & cpu_flags(cpuinfo))
    if found:
        return PrecisionChoice("bf16-mixed", f"the CPU has {' and '.join(found)}, which run bf16 natively")
    return PrecisionChoice("32-true", "the CPU has no native bf16 (no amx_bf16 or avx512_bf16 flag)")


def fp32(tensor: Tensor) -> Tensor:
    """``tensor`` in float32 if it is fp16/bf16 (mixed precision's output), else unchanged (fp64 stays fp64)."""
    return tensor.float() if tensor.dtype in LOW_PRECISION else tensor


def no_autocast(tensor: Tensor) -> torch.autocast:
    """A context that switches autocast off on ``tensor``'s device, for computations that must stay in fp32.

    Autocast runs convolutions and matrix products in bf16/fp16 even on fp32 inputs; inside this
    context they run in the inputs' dtype (pass fp32 inputs, e.g. through :func:`fp32`).
    """
    return torch.autocast(tensor.device.type, enabled=False)
