"""How a warped prior enters an engine's output. Small pure functions with one uniform shape:
`(current, prior-derived arrays, settings) -> array`.

- SR engine: take the warped previous output's high frequencies where the flow is trusted (frame-recurrent
  super-resolution, training-free). Low frequencies always come from the current frame, so a wrong warp can
  only move fine texture, never a player's silhouette: no ghosts.
- FLUX engine (its propagation lives in `vidup.engines.flux`): outputs are anchored to the input's low
  frequencies afterwards.
"""

from __future__ import annotations

import cv2
import numpy as np

from vidup.pixels import from_scaled


def high_frequencies(image: np.ndarray, sigma: float) -> np.ndarray:
    """image minus its Gaussian blur: detail finer than `sigma`, float32."""
    image = np.asarray(image, np.float32)
    return image - cv2.GaussianBlur(image, (0, 0), sigma)


def blend_high_frequencies(current: np.ndarray, warped_previous: np.ndarray, confidence: np.ndarray,
                           strength: float, sigma: float) -> np.ndarray:
    """current + strength * confidence * highpass(warped_previous - current), in the frames' dtype and scale.

    `confidence` may be at the input's resolution: it is resized here (as 8-bit weights, where that is cheap).
    8-bit frames take a fixed-point path (int16 difference, one blur, weights in 1/255, a saturating add): a
    1080p frame in a third of the float path's time, within one code of it."""
    h, w = current.shape[:2]
    if current.dtype == np.uint8:
        difference = cv2.subtract(warped_previous, current, dtype=cv2.CV_16S)
        detail = cv2.subtract(difference, cv2.GaussianBlur(difference, (0, 0), sigma))
        weight = cv2.convertScaleAbs(confidence, alpha=255.0 * strength)  # 0-255, rounded and saturated
        if weight.shape != (h, w):
            weight = cv2.resize(weight, (w, h), interpolation=cv2.INTER_LINEAR)
        weighted = cv2.multiply(detail, cv2.merge([weight, weight, weight]), scale=1 / 255, dtype=cv2.CV_16S)
        return cv2.add(current, weighted, dtype=cv2.CV_8U)
    if confidence.shape != (h, w):
        confidence = cv2.resize(confidence, (w, h), interpolation=cv2.INTER_LINEAR)
    c = current.astype(np.float32)
    difference = warped_previous.astype(np.float32) - c
    out = c + (strength * confidence)[..., None] * high_frequencies(difference, sigma)
    return from_scaled(out, current.dtype)


# --- colour and low-frequency anchoring ---------------------------------------------------------------------


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
    delta = cv2.GaussianBlur(small.astype(np.float32), (0, 0), sigma) - cv2.GaussianBlur(down.astype(np.float32),
                                                                                       (0, 0), sigma)
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
