"""Colour anchoring: an engine's output keeps the low frequencies (colour, shading) of its input, and takes only
detail from the network or the diffusion model. GAN models shift flat colours and diffusion drifts them; kits and
graphics must keep theirs. The SR engine anchors to the input at the input's resolution; FLUX stages use the
wavelet (or AdaIN) colour fix at full size."""

from __future__ import annotations

import cv2
import numpy as np

from vidup.pixels import from_scaled, high_frequencies


def wavelet_color_fix(output: np.ndarray, reference: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    """Low frequencies (colour, shading) from the reference, high frequencies (detail) from the output; both the
    same size and dtype."""
    fixed = high_frequencies(output, sigma) + cv2.GaussianBlur(reference.astype(np.float32), (0, 0), sigma)
    return from_scaled(fixed, output.dtype)


def anchor_to_input(output: np.ndarray, small: np.ndarray, sigma: float) -> np.ndarray:
    """The wavelet colour fix done at the input's resolution: output + upsample(blur(input) - blur(down(output))),
    with `sigma` in input pixels. The same low frequencies are exchanged as at full size, for a fraction of the
    work (one downsample, two small blurs, one upsample)."""
    h, w = small.shape[:2]
    down = cv2.resize(output, (w, h), interpolation=cv2.INTER_AREA)
    delta = cv2.GaussianBlur(small.astype(np.float32), (0, 0), sigma) - cv2.GaussianBlur(
        down.astype(np.float32), (0, 0), sigma
    )
    up = cv2.resize(delta, (output.shape[1], output.shape[0]), interpolation=cv2.INTER_LINEAR)
    if output.dtype == np.uint8:  # a saturating add straight into 8 bits: no full-size float copy of the frame
        return cv2.add(output, up, dtype=cv2.CV_8U)
    return from_scaled(output.astype(np.float32) + up, output.dtype)


def adain_color_fix(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel mean and spread of the reference (AdaIN)."""
    out, ref = output.astype(np.float32), reference.astype(np.float32)
    mean_o, std_o = out.mean((0, 1)), out.std((0, 1)) + 1e-5
    fixed = (out - mean_o) / std_o * ref.std((0, 1)) + ref.mean((0, 1))
    return from_scaled(fixed, output.dtype)


COLOR_FIXES = {"wavelet": wavelet_color_fix, "adain": adain_color_fix, "none": lambda output, reference: output}
