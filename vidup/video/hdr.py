"""HDR around the engines. The default is none of this: engines see the source's code values (right for HLG,
which is designed to look sensible as it is). Two opt-in paths:

- `pq_working = "display"`: PQ code values -> display light -> a BT.1886-like gamma over [0, peak] for the
  engine, and back, so networks trained on SDR see contrast where SDR has it (PQ packs most codes into the
  darks). Primaries stay BT.2020.
- `tonemap = "sdr"`: PQ or HLG BT.2020 -> BT.709 SDR (gamut matrix in linear light; on the maximum channel, so
  hues hold, a curve that is linear up to a knee below reference white (`sdr_white_nits`) and rolls the rest up
  to `hdr_peak_nits` into the top of the range; BT.1886 gamma). FFmpeg's own `tonemap` needs
  linear input that only `zscale` makes, and PyAV's FFmpeg has no zscale, so the same steps are done here.

Frames are HxWx3 RGB arrays, uint16 (or uint8) code values in and out.
"""

from __future__ import annotations

import numpy as np

from vidup.video.colour import TRC_HLG, TRC_PQ

M1, M2 = 2610 / 16384, 2523 / 4096 * 128
C1, C2, C3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
HLG_A, HLG_B, HLG_C = 0.17883277, 0.28466892, 0.55991073
GAMMA = 2.4  # BT.1886
BT2020_TO_BT709 = np.array(
    [[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]], np.float32
)
LUMA_2020 = np.array([0.2627, 0.6780, 0.0593], np.float32)


def pq_to_nits(code: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: code values in [0, 1] -> cd/m2."""
    p = np.power(np.clip(code, 0, 1), 1 / M2)
    return 10000.0 * np.power(np.maximum(p - C1, 0) / (C2 - C3 * p), 1 / M1)


def nits_to_pq(nits: np.ndarray) -> np.ndarray:
    y = np.power(np.clip(nits / 10000.0, 0, 1), M1)
    return np.power((C1 + C2 * y) / (1 + C3 * y), M2)


def hlg_to_nits(code: np.ndarray, peak: float = 1000.0) -> np.ndarray:
    """ARIB STD-B67 / BT.2100 HLG: inverse OETF to scene light, then the OOTF for a `peak` cd/m2 display."""
    code = np.clip(code, 0, 1)
    scene = np.where(code <= 0.5, code**2 / 3, (np.exp((code - HLG_C) / HLG_A) + HLG_B) / 12)
    gamma = 1.2 + 0.42 * np.log10(peak / 1000.0)
    luma = np.maximum((scene * LUMA_2020).sum(-1, keepdims=True), 1e-9)
    return peak * np.power(luma, gamma - 1) * scene


def _scale(image: np.ndarray) -> float:
    return 65535.0 if image.dtype == np.uint16 else 255.0 if image.dtype == np.uint8 else 1.0


def _back(values: np.ndarray, dtype) -> np.ndarray:
    if dtype in (np.uint8, np.uint16):
        top = np.iinfo(dtype).max
        return np.clip(values * top + 0.5, 0, top).astype(dtype)
    return values.astype(dtype)


class DisplayReferredPQ:
    """PQ code values <-> a display-referred gamma signal over [0, peak] cd/m2 (the opt-in PQ working space)."""

    def __init__(self, peak_nits: float):
        self.peak = peak_nits

    def forward(self, image: np.ndarray) -> np.ndarray:
        nits = pq_to_nits(image.astype(np.float32) / _scale(image))
        return _back(np.power(np.clip(nits / self.peak, 0, 1), 1 / GAMMA), image.dtype)

    def inverse(self, image: np.ndarray) -> np.ndarray:
        signal = image.astype(np.float32) / _scale(image)
        return _back(nits_to_pq(np.power(signal, GAMMA) * self.peak), image.dtype)


KNEE = 0.75  # of reference white: below it SDR keeps HDR's levels exactly


class ToneMapToSdr:
    """PQ or HLG BT.2020 -> BT.709 SDR (BT.1886 gamma); uint16 in, uint16 out (the writer encodes 8 or 10 bits)."""

    def __init__(self, transfer: int, white_nits: float, peak_nits: float):
        if transfer not in (TRC_PQ, TRC_HLG):
            raise ValueError("tone mapping takes PQ or HLG sources")
        self.transfer, self.white, self.peak = transfer, white_nits, peak_nits

    def curve(self, x: np.ndarray) -> np.ndarray:
        """Linear below the knee; above it an extended-Reinhard shoulder that takes the peak to 1."""
        t = np.maximum(x - KNEE, 0) / (1 - KNEE)
        peak = (self.peak / self.white - KNEE) / (1 - KNEE)
        shoulder = KNEE + (1 - KNEE) * t * (1 + t / peak**2) / (1 + t)
        return np.where(x <= KNEE, x, shoulder)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        code = image.astype(np.float32) / _scale(image)
        nits = pq_to_nits(code) if self.transfer == TRC_PQ else hlg_to_nits(code, self.peak)
        linear = np.clip((nits / self.white) @ BT2020_TO_BT709.T, 0, None)  # 1.0 = SDR reference white
        top = linear.max(-1, keepdims=True)
        mapped = self.curve(top)
        sdr = linear * np.where(top > 0, mapped / np.maximum(top, 1e-9), 0)
        return _back(np.power(np.clip(sdr, 0, 1), 1 / GAMMA), image.dtype)
