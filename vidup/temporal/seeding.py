"""How a warped prior enters an engine's output. Small pure functions with one uniform shape:
`(current, prior-derived arrays, settings) -> array`.

- SR engine: take the warped previous output's high frequencies where the flow is trusted (frame-recurrent
  super-resolution, training-free). Low frequencies always come from the current frame, so a wrong warp can
  only move fine texture, never a player's silhouette: no ghosts.
- FLUX engine (its propagation lives in `vidup.engines.flux`): outputs are anchored to the input's low
  frequencies afterwards.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import cv2
import numpy as np

from vidup.config import HistoryConfig, TemporalConfig
from vidup.pixels import from_scaled, high_frequencies, peak
from vidup.temporal import torch_ops
from vidup.temporal.history_constants import ENERGY_SIGMA_FACTOR, FRACTION, RANGE_FLOOR


class HistoryBlend(HistoryConfig):
    """How the SR engine takes the warped previous output: its settings (`config.temporal.history`) and the blend."""

    @classmethod
    def from_config(cls, t: TemporalConfig) -> "HistoryBlend":
        return cls(**dataclasses.asdict(t.history))

    def detail_sigma(self, scale: float) -> float:
        """The rectified split in output px for an upscale by `scale`: the network invents detail finer than the
        input resolves (and that is what flickers); structure the input carries stays the current frame's."""
        return min(self.max_sigma, max(1.0, self.input_sigma * scale))

    @property
    def active(self) -> bool:
        return self.weight > 0 if self.mode == "rectified" else self.strength > 0

    def apply(self, current: np.ndarray, prior, scale: float) -> np.ndarray:
        """The array path: `prior` is the frame's `TemporalPrior`, `scale` the upscale factor (output / input)."""
        if self.mode == "highpass":
            return blend_high_frequencies(
                current, prior.warped_output, prior.flows.confidence, self.strength, self.sigma
            )
        return rectified_blend(
            current,
            prior.sharp_warped_output,
            prior.flows.confidence,
            self.weight,
            self.detail_sigma(scale),
            self.radius,
            self.reactive,
            self.gain_max,
            self.sharpen,
        )

    def apply_tensors(self, current, previous, flow, confidence, top: float, scale: float):
        """The device path: (1, 3, H, W) tensors in [0, 1], flow in output pixels."""
        if self.mode == "highpass":
            return torch_ops.blend_high_frequencies(
                current, torch_ops.warp(previous, flow), confidence, self.strength, self.sigma, top
            )
        return torch_ops.rectified_blend(
            current,
            torch_ops.warp(previous, flow, mode="bicubic"),
            confidence,
            self.weight,
            self.detail_sigma(scale),
            self.radius,
            self.reactive,
            self.gain_max,
            self.sharpen,
            top,
        )


def blend_high_frequencies(
    current: np.ndarray, warped_previous: np.ndarray, confidence: np.ndarray, strength: float, sigma: float
) -> np.ndarray:
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


def rectified_blend(
    current: np.ndarray,
    history: np.ndarray,
    confidence: np.ndarray,
    weight: float,
    sigma: float,
    radius: int,
    reactive: float,
    gain_max: float,
    sharpen: float = 0.0,
) -> np.ndarray:
    """Temporal accumulation of detail with rectified history (after AMD FSR 2 and Unreal TSR), in the frames'
    dtype. Low frequencies (coarser than `sigma`) always come from the current frame: a wrong warp can never
    move a silhouette or shift a colour. Detail is accumulated:

    1. The history's detail (the previous output, warped with a sharp kernel by the caller; optionally
       sharpened a little first, `sharpen`, standing in for FSR 2's RCAS) is clamped to the range the current
       frame's detail spans in a (2 radius + 1)^2 neighbourhood: it cannot ghost, so it need not be trusted
       blindly.
    2. Each pixel's history weight is `weight` x flow confidence x a reactive term that falls as the clamp had to
       move the history (relative to the local range): history that disagrees with the present fades at once.
    3. Blending uncorrelated detail lowers its energy, and every warp resamples: left alone, texture would
       soften frame after frame until the next cut. The blended detail is scaled back up towards the current
       per-frame output's local detail energy (never above it, by at most `gain_max`), so detail holds through
       a shot while its pattern comes mostly from the stable history.
    """
    h, w = current.shape[:2]
    if confidence.shape != (h, w):
        confidence = cv2.resize(confidence, (w, h), interpolation=cv2.INTER_LINEAR)
    kernel = _box(radius)
    if current.dtype == np.uint8:
        return _rectified_8bit(current, history, confidence, weight, sigma, kernel, reactive, gain_max, sharpen)
    top = float(peak(current.dtype))
    cur = current.astype(np.float32)
    base = cv2.GaussianBlur(cur, (0, 0), sigma)
    detail = cv2.subtract(cur, base)
    past = high_frequencies(history, sigma)
    if sharpen:
        past *= 1.0 + sharpen
    low, high = cv2.erode(detail, kernel), cv2.dilate(detail, kernel)
    clamped = cv2.min(cv2.max(past, low), high)
    # OpenCV ops throughout: numpy's reductions over the 3-channel axis cost 14 ms each on a 1024x576 frame.
    moved = _channel_mean(cv2.absdiff(past, clamped))
    span = _channel_mean(cv2.subtract(high, low)) + RANGE_FLOOR * top
    trust = 1.0 - reactive * cv2.divide(moved, span)
    alpha = cv2.multiply(np.clip(trust, 0.0, 1.0, out=trust), confidence, scale=weight)
    blended = cv2.add(detail, _times(cv2.subtract(clamped, detail), alpha))
    if gain_max > 1.0:
        target = _local_energy(cv2.absdiff(detail, 0.0), ENERGY_SIGMA_FACTOR * sigma)
        actual = _local_energy(cv2.absdiff(blended, 0.0), ENERGY_SIGMA_FACTOR * sigma)
        gain = np.clip(cv2.divide(target, actual + 1e-3 * top), 1.0, gain_max)
        blended = _times(blended, cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR))
    depth = {np.dtype(np.uint16): cv2.CV_16U}.get(current.dtype)
    if depth is None:
        return from_scaled(cv2.add(base, blended), current.dtype)
    return cv2.add(base, blended, dtype=depth)  # rounded and saturated in one pass


def _rectified_8bit(current, history, confidence, weight, sigma, kernel, reactive, gain_max, sharpen):
    """`rectified_blend` for 8-bit frames in fixed point: detail as int16 (an 8-bit blur is exact integer work
    and `current == base + detail` holds exactly), per-pixel weights as 8-bit fractions, channel sums instead of
    means. Half the bytes of the float path and no full-size float frame: under half its time (18.6 against
    41-48 ms at 1024x576 on a 2-core CPU), within three codes of it (tests/test_history.py)."""
    h, w = current.shape[:2]
    # Scratch frames are written over once done with (dst=): fresh full-size allocations cost page faults that
    # would otherwise be a third of the time.
    base = cv2.GaussianBlur(current, (0, 0), sigma)
    detail = cv2.subtract(current, base, dtype=cv2.CV_16S)
    past = cv2.subtract(history, cv2.GaussianBlur(history, (0, 0), sigma), dtype=cv2.CV_16S)
    if sharpen:
        past = cv2.addWeighted(past, 1.0 + sharpen, past, 0.0, 0.0, dtype=cv2.CV_16S)
    low, high = cv2.erode(detail, kernel), cv2.dilate(detail, kernel)
    clamped = cv2.max(past, low)
    cv2.min(clamped, high, dst=clamped)
    moved = _channel_sum(cv2.absdiff(past, clamped, dst=past))
    span = _channel_sum(cv2.subtract(high, low, dst=high))
    trust = cv2.divide(moved, cv2.add(span, round(3 * RANGE_FLOOR * 255), dst=span), scale=reactive, dtype=cv2.CV_32F)
    cv2.subtract(1.0, trust, dst=trust)
    alpha = cv2.multiply(trust, confidence, scale=255.0 * weight, dtype=cv2.CV_8U)  # saturation clips to [0, 1]
    weights = cv2.merge([alpha, alpha, alpha])
    # The blended detail carries FRACTION fractional steps per code until the final add: rounding the blend and
    # the gain to whole codes would keep amplifying +-1-code detail to nothing, and fine texture would fade.
    blended = cv2.subtract(clamped, detail, dst=clamped)
    cv2.multiply(blended, weights, dst=blended, scale=FRACTION / 255, dtype=cv2.CV_16S)
    cv2.addWeighted(detail, float(FRACTION), blended, 1.0, 0.0, dst=blended, dtype=cv2.CV_16S)
    if gain_max > 1.0:
        energy_sigma = ENERGY_SIGMA_FACTOR * sigma
        # |detail| and |blended| fit in 8 bits: both lie between a current and a clamped history detail.
        target = _local_energy(cv2.convertScaleAbs(detail, dst=weights), energy_sigma)
        actual = _local_energy(cv2.convertScaleAbs(blended, dst=weights, alpha=1 / FRACTION), energy_sigma)
        gain = np.clip(cv2.divide(target, actual + 1e-3 * 255), 1.0, gain_max)
        code = 255.0 / gain_max  # the gain as an 8-bit fraction of its largest value
        gain = cv2.resize(cv2.convertScaleAbs(gain, alpha=code), (w, h), interpolation=cv2.INTER_LINEAR)
        cv2.multiply(blended, cv2.merge([gain, gain, gain], dst=weights), dst=blended, scale=1 / code, dtype=cv2.CV_16S)
    return cv2.addWeighted(base, 1.0, blended, 1 / FRACTION, 0.0, dst=base, dtype=cv2.CV_8U)  # rounded, saturated


@lru_cache(maxsize=4)
def _box(radius: int) -> np.ndarray:
    """The (2 radius + 1)^2 neighbourhood, built once per radius rather than per frame."""
    return cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1, 2 * radius + 1))


_MEAN_OF_3, _SUM_OF_3 = np.full((1, 3), 1 / 3, np.float32), np.ones((1, 3), np.float32)


def _channel_mean(image: np.ndarray) -> np.ndarray:
    return cv2.transform(image, _MEAN_OF_3)


def _times(image: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """A 3-channel image times a 1-channel weight."""
    return cv2.multiply(image, cv2.merge([weight, weight, weight]))


def _channel_sum(image: np.ndarray) -> np.ndarray:
    return cv2.transform(image, _SUM_OF_3)


def _local_energy(magnitude: np.ndarray, sigma: float) -> np.ndarray:
    """Mean absolute detail (`magnitude`: |detail|, 3 channels) around each pixel, a Gaussian of `sigma`, left at
    a quarter of the size (frames of 64 px and more): the map is smooth, so a tenth of the work loses nothing;
    callers bring their ratio back to full size."""
    h, w = magnitude.shape[:2]
    factor = 1 if min(h, w) < 64 else 4
    if factor > 1:
        magnitude = cv2.resize(magnitude, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(_channel_mean(magnitude.astype(np.float32)), (0, 0), sigma / factor)
