"""How a warped prior enters an engine's output. Small pure functions with one uniform shape:
`(current, prior-derived arrays, settings) -> array`.

- SR engine: take the warped previous output's high frequencies where the flow is trusted (frame-recurrent
  super-resolution, training-free). Low frequencies always come from the current frame, so a wrong warp can
  only move fine texture, never a player's silhouette: no ghosts.
- FLUX engine: start denoising from a mask blend, in latent space, of the warped previous result and the
  current resized input, noised to a lower strength; anchor colours to the input afterwards.
"""

from __future__ import annotations

import cv2
import numpy as np


def blend_high_frequencies(current: np.ndarray, warped_previous: np.ndarray, confidence: np.ndarray,
                           strength: float, sigma: float) -> np.ndarray:
    """current + strength * confidence * highpass(warped_previous - current), uint8 in and out."""
    c = current.astype(np.float32)
    difference = warped_previous.astype(np.float32) - c
    highpass = difference - cv2.GaussianBlur(difference, (0, 0), sigma)
    out = c + (strength * confidence)[..., None] * highpass
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
