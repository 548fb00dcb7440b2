"""Frames travel as HxWx3 RGB arrays of uint8 (8-bit sources) or uint16 (10/12-bit sources). These helpers are
the one place that knows their scales, so engines and blends keep a frame's precision from input to output."""

from __future__ import annotations

import cv2
import numpy as np

PEAKS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def peak(dtype) -> float:
    """The code value of full scale for a frame dtype (1.0 for float frames)."""
    return PEAKS.get(np.dtype(dtype), 1.0)


def to_unit(image: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]."""
    return image.astype(np.float32) / peak(image.dtype)


def from_unit(values: np.ndarray, dtype) -> np.ndarray:
    """Back to `dtype`, rounded and clipped (float dtypes pass through clipped to [0, 1])."""
    top = peak(dtype)
    if np.dtype(dtype).kind == "f":
        return np.clip(values, 0, 1).astype(dtype)
    return np.clip(values * top + 0.5, 0, top).astype(dtype)


def from_scaled(values: np.ndarray, dtype) -> np.ndarray:
    """float values already on `dtype`'s scale (0-255 or 0-65535) back to `dtype`, rounded and clipped."""
    return np.clip(values + 0.5, 0, peak(dtype)).astype(dtype)


def to_8bit(image: np.ndarray) -> np.ndarray:
    """An 8-bit view for analysis (optical flow, cut detection); uint8 frames pass through untouched."""
    if image.dtype == np.uint8:
        return image
    return (image >> 8).astype(np.uint8)


def high_frequencies(image: np.ndarray, sigma: float) -> np.ndarray:
    """image minus its Gaussian blur: detail finer than `sigma`, float32."""
    image = np.asarray(image, np.float32)
    return image - cv2.GaussianBlur(image, (0, 0), sigma)
