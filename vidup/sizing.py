"""Target-size arithmetic and the resize filter. Output sizes are even (4:2:0 chroma needs it), so 1920x1080
stays 1080 lines; an engine with coarser needs (FLUX: multiples of 16 for its VAE and 2x2 patches) works at its
own size and resamples to the target."""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np

from vidup.errors import ConfigError

SIZE_MULTIPLE = 2  # output sides: even, for 4:2:0 chroma
MIN_SIDE = 16


def round_to_multiple(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    return max(multiple, int(value / multiple + 0.5) * multiple)  # halves round up, not to even


def round_up_to(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class SizeSpec:
    """How the user asked for the output size: exactly one of long side, explicit WxH, or a scale factor."""

    long_side: int | None = 1024
    width: int | None = None
    height: int | None = None
    scale: float | None = None

    @classmethod
    def parse(cls, size: str | int | None = None, scale: float | None = None) -> "SizeSpec":
        if size is not None and scale is not None:
            raise ConfigError("give either --size or --scale, not both")
        if scale is not None:
            if not 0 < float(scale) <= 16:
                raise ConfigError(f"--scale must be in (0, 16], got {scale}")
            return cls(long_side=None, scale=float(scale))
        if size is None:
            return cls()
        text = str(size).strip().lower()
        if match := re.fullmatch(r"(\d+)x(\d+)", text):
            w, h = int(match.group(1)), int(match.group(2))
            if w < MIN_SIDE or h < MIN_SIDE:
                raise ConfigError(f"--size {text}: both sides must be at least {MIN_SIDE}")
            return cls(long_side=None, width=w, height=h)
        if text.isdigit() and int(text) >= MIN_SIDE:
            return cls(long_side=int(text))
        raise ConfigError(f"--size must be a long side like 1024 or WxH like 1024x576, got '{size}'")

    def resolve(self, in_width: int, in_height: int) -> tuple[int, int]:
        """Output (width, height) for an input size; each side even."""
        if self.width is not None and self.height is not None:
            return round_to_multiple(self.width), round_to_multiple(self.height)
        if self.scale is not None:
            return round_to_multiple(in_width * self.scale), round_to_multiple(in_height * self.scale)
        factor = self.long_side / max(in_width, in_height)
        return round_to_multiple(in_width * factor), round_to_multiple(in_height * factor)

    def describe(self) -> str:
        if self.width is not None:
            return f"{self.width}x{self.height}"
        if self.scale is not None:
            return f"x{self.scale:g}"
        return f"{self.long_side} px long side"


def resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area filter when shrinking (no aliasing), Lanczos when enlarging (sharp, as the paper's stage 0)."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrinking = width * height < w * h
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4)
