"""Scene-cut detection on the input stream, in the manner of PySceneDetect's ContentDetector: the mean change
of hue, saturation and value between consecutive (downscaled) frames, against a threshold that adapts to the
shot's own motion so a fast pan is not a cut.

A streaming detector cannot look ahead as PySceneDetect's AdaptiveDetector does, so during a fast pan (content
change ~11 per frame on the sample) a real cut (~30) can fall short of the adaptive ratio. Such a frame is then
settled by motion: if optical flow explains almost none of it from the previous frame, it is a cut."""

from __future__ import annotations

from collections import deque
from typing import Callable

import cv2
import numpy as np

from vidup.config import ShotConfig


class ShotDetector:
    def __init__(self, settings: ShotConfig = ShotConfig()):
        self.settings = settings
        self._recent: deque[float] = deque(maxlen=settings.window)
        self._previous: np.ndarray | None = None
        self._since_cut = 0
        self.last_score = 0.0

    @staticmethod
    def _signature(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        scale = 128 / max(h, w)
        small = cv2.resize(rgb, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32)

    def reset(self) -> None:
        self._previous, self._since_cut = None, 0
        self._recent.clear()

    def is_cut(self, rgb: np.ndarray, motion_explained: Callable[[], float] | None = None) -> bool:
        """Feed the next frame; True when it starts a new shot (the very first frame counts as one).

        `motion_explained`, when given, returns the fraction of this frame that the previous one explains through
        optical flow (a trusted backward warp); it is only called for a frame whose content change passes the
        fixed threshold but not the adaptive ratio."""
        signature = self._signature(rgb)
        previous, self._previous = self._previous, signature
        if previous is None or previous.shape != signature.shape:
            self._since_cut = 0
            return True
        hue = np.abs(signature[..., 0] - previous[..., 0])
        hue = np.minimum(hue, 180 - hue) * (255 / 90)  # hue wraps around; bring it to the 0-255 scale
        score = float((hue.mean() + np.abs(signature[..., 1:] - previous[..., 1:]).mean(axis=(0, 1)).sum()) / 3)
        self.last_score = score
        baseline = (sum(self._recent) / len(self._recent)) if self._recent else 0.0
        self._since_cut += 1
        s = self.settings
        cut = (
            score >= s.threshold
            and self._since_cut >= s.min_shot_frames
            and (
                score >= s.adaptive_ratio * baseline
                or (motion_explained is not None and motion_explained() < s.min_explained)
            )
        )
        if cut:
            self._recent.clear()
            self._since_cut = 0
        else:
            self._recent.append(score)
        return cut
