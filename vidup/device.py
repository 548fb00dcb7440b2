"""Device and precision are chosen once, here, and passed down (cuda > mps > cpu)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import torch

from vidup.config import Precision
from vidup.errors import ConfigError

PRECISIONS = get_args(Precision)


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype  # compute dtype (autocast on CPU, weights on accelerators)

    @property
    def autocast(self) -> bool:
        return self.dtype != torch.float32


def device_kind(device: str) -> str:
    """The device's type without its index: cuda:0 and cuda:1 compute alike (what a job records and compares)."""
    return str(device).split(":")[0]


def cpu_has_fast_bf16() -> bool:
    # Without native bf16 instructions autocast is emulated and slower than fp32.
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def choose_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{requested}': {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but this torch build sees no CUDA GPU")
    return device


def choose_placement(
    device: str = "auto", precision: str = "auto", *, supports_bf16=True, supports_fp16=True, cpu_bf16: bool = True
) -> Placement:
    """`precision="auto"`: bf16 on CUDA (fp16 without bf16), fp16 on MPS, and on CPU bf16 only where the CPU has
    native bf16 instructions and the caller allows it (`cpu_bf16`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    dev = choose_device(device)
    if precision == "auto":
        if dev.type == "cuda":
            precision = "bf16" if supports_bf16 and torch.cuda.is_bf16_supported() else "fp16"
        elif dev.type == "mps":
            precision = "fp16" if supports_fp16 else "fp32"
        else:
            precision = "bf16" if cpu_bf16 and supports_bf16 and cpu_has_fast_bf16() else "fp32"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype == torch.float16 and dev.type == "cpu":
        raise ConfigError("fp16 is not supported on CPU; use bf16 or fp32")
    return Placement(dev, dtype)
