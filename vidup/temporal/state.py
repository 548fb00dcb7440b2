"""Per-stream temporal state: the previous input and output, the flow to them, and the cut detector.

The runner's `Upscaler` owns one `TemporalTracker`; engines receive a `TemporalPrior` (or None on the first
frame of a shot) and never see files, flow estimators or detectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np

from vidup.pixels import to_8bit
from vidup.temporal.flow import FlowEstimator, FlowPair, flow_pair, upsample_flow, warp
from vidup.temporal.shots import ShotDetector


@dataclass
class TemporalPrior:
    """What the previous frame offers the current one, at the output size."""

    flows: FlowPair  # at input resolution
    size: tuple[int, int]  # output (width, height)
    previous_output: np.ndarray
    index_in_shot: int  # 1 for the second frame of a shot
    extras: dict = field(default_factory=dict)  # engine-specific state carried from the previous frame

    @cached_property
    def flow(self) -> np.ndarray:
        """Output-resolution flow from the current frame to the previous one."""
        return upsample_flow(self.flows.cur_to_prev, *self.size)

    @cached_property
    def confidence(self) -> np.ndarray:
        return cv2.resize(self.flows.confidence, self.size, interpolation=cv2.INTER_LINEAR)

    def warp(self, image: np.ndarray) -> np.ndarray:
        """Bring an output-sized image of the previous frame into the current one."""
        return warp(image, self.flow)

    @cached_property
    def warped_output(self) -> np.ndarray:
        return self.warp(self.previous_output)


class TemporalTracker:
    def __init__(self, flow_preset: str = "medium", photometric_threshold: float = 0.2, shot_threshold: float = 27.0):
        self.estimator = FlowEstimator(flow_preset)
        self.shots = ShotDetector(threshold=shot_threshold)
        self.photometric_threshold = photometric_threshold
        self.cuts: list[int] = []
        self._frame = -1
        self.reset()

    def reset(self) -> None:
        """A cut (detected or declared): nothing from before may reach the next frame."""
        self._previous_input: np.ndarray | None = None
        self._previous_output: np.ndarray | None = None
        self._extras: dict = {}
        self._index_in_shot = 0

    def prior_for(self, frame: np.ndarray, size: tuple[int, int]) -> TemporalPrior | None:
        """The prior for `frame` (uint8 or uint16; motion and cuts are measured on its 8-bit view)."""
        frame = to_8bit(frame)
        self._frame += 1
        previous = self._previous_input
        comparable = previous is not None and previous.shape == frame.shape
        flows: FlowPair | None = None

        def motion_explained() -> float:  # only asked for when the content change alone cannot decide
            nonlocal flows
            flows = flow_pair(self.estimator, previous, frame, photometric_threshold=self.photometric_threshold)
            return flows.trusted_fraction

        if self.shots.is_cut(frame, motion_explained if comparable else None):
            if self._frame:
                self.cuts.append(self._frame)
            self.reset()
            return None
        if not comparable or self._previous_output is None or self._previous_output.shape[1::-1] != tuple(size):
            return None
        if flows is None:
            flows = flow_pair(self.estimator, previous, frame, photometric_threshold=self.photometric_threshold)
        return TemporalPrior(flows, size, self._previous_output, self._index_in_shot, dict(self._extras))

    def commit(self, frame: np.ndarray, output: np.ndarray, extras: dict | None = None) -> None:
        self._previous_input, self._previous_output = to_8bit(frame), output
        self._extras = extras or {}
        self._index_in_shot += 1
