"""Per-stream temporal state, in two halves that can run in different threads.

- `MotionAnalyser` looks only at input frames: cuts and optical flow between consecutive inputs. It can run
  ahead of the engine (the fast path runs it in its own thread while the network works on earlier frames).
- `TemporalTracker` pairs each frame's `Motion` with the previous *output* and hands the engine a
  `TemporalPrior` (or None on the first frame of a shot). Engines never see files, flow estimators or detectors.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Iterator

import cv2
import numpy as np

from vidup.config import FlowConfig, ShotConfig, TemporalConfig
from vidup.pixels import to_8bit
from vidup.temporal.flow import FlowEstimator, FlowPair, flow_fits, flow_pair, upsample_flow, warp
from vidup.temporal.shots import ShotDetector


@dataclass
class Motion:
    """What consecutive input frames say about the current one."""

    cut: bool  # a new shot starts here (nothing from before may reach it)
    flows: FlowPair | None  # between the previous input and this one; None at cuts and on a size change


@dataclass
class TemporalPrior:
    """What the previous frame offers the current one, at the output size."""

    flows: FlowPair  # at input resolution
    size: tuple[int, int]  # output (width, height)
    previous_output: np.ndarray
    index_in_shot: int  # 1 for the second frame of a shot
    carry: object = None  # the engine's own typed state from the previous frame (`EngineOutput.carry`)

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

    @cached_property
    def sharp_warped_output(self) -> np.ndarray:
        """The previous output warped with a bicubic kernel: repeated warps do not compound blur as bilinear's do."""
        return warp(self.previous_output, self.flow, interpolation=cv2.INTER_CUBIC)


class MotionAnalyser:
    """Cut detection and flow on the input stream (8-bit views of the frames). Flow is computed at most
    `flow.max_side` pixels on the long side: DIS's cost grows with the pixel count (an HD input would cost half a
    second a pair), and every consumer reads the flow's scale from its own shape."""

    def __init__(self, flow: FlowConfig = FlowConfig(), shots: ShotConfig = ShotConfig()):
        self.flow = flow
        self.estimator = FlowEstimator(flow.preset, flow.field_side)
        self.shots = ShotDetector(shots)
        self.cuts: list[int] = []
        self.declared_cuts: frozenset[int] | None = None  # set: cuts come from a plan, not from the detector
        self._frame = -1
        self._previous: np.ndarray | None = None

    @classmethod
    def from_config(cls, t: TemporalConfig) -> "MotionAnalyser":
        return cls(t.flow, t.shots)

    def follow_plan(self, cuts) -> None:
        """From now on the frames that start a shot are `cuts` (indices counted from the next frame, which is
        always one): a job's segment decides exactly what its plan decided for the whole clip."""
        self.reset()
        self.cuts, self._frame = [], -1
        self.declared_cuts = frozenset(cuts) | {0}

    def reset(self) -> None:
        """A declared cut: the next frame starts a shot."""
        self._previous = None
        self.shots.reset()

    def _for_flow(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        if not self.flow.max_side or max(h, w) <= self.flow.max_side:
            return frame
        factor = self.flow.max_side / max(h, w)
        return cv2.resize(frame, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)

    def analyse(self, frame: np.ndarray, flows: FlowPair | None = None, need_flow: bool = True) -> Motion:
        """The motion of the next frame. `flows` (already computed for the previous frame and this one) saves
        computing them here; without `need_flow` only the cut is decided (flow is computed only if the detector
        asks for it)."""
        frame = self._for_flow(to_8bit(frame))
        self._frame += 1
        previous, self._previous = self._previous, frame
        comparable = previous is not None and previous.shape == frame.shape and flow_fits(frame)
        if self.declared_cuts is not None:
            if self._frame in self.declared_cuts or previous is None:
                if self._frame:
                    self.cuts.append(self._frame)
                return Motion(cut=True, flows=None)
            return self._within_shot(previous, frame, comparable, need_flow, flows)

        def motion_explained() -> float:  # only asked for when the content change alone cannot decide
            nonlocal flows
            if flows is None:
                flows = flow_pair(self.estimator, previous, frame, self.flow)
            return flows.trusted_fraction

        if previous is None or self.shots.is_cut(frame, motion_explained if comparable else None):
            if self._frame and previous is not None:
                self.cuts.append(self._frame)
            if previous is None:
                self.shots.is_cut(frame)  # the first frame of a declared shot feeds the detector too
            return Motion(cut=True, flows=None)
        return self._within_shot(previous, frame, comparable, need_flow, flows)

    def _within_shot(self, previous, frame, comparable: bool, need_flow: bool, flows: FlowPair | None) -> Motion:
        if not comparable or not need_flow:
            return Motion(cut=False, flows=flows if comparable else None)
        if flows is None:
            flows = flow_pair(self.estimator, previous, frame, self.flow)
        return Motion(cut=False, flows=flows)

    def analyse_stream(self, frames: Iterable[np.ndarray], workers: int) -> Iterator[Motion]:
        """`analyse` over a stream, with the flow of each consecutive pair computed by `workers` threads ahead of
        the (sequential) cut decisions: pairs are independent, and on a many-core host next to a GPU the flow
        would otherwise be the slowest stage. One DIS instance per thread."""
        local = threading.local()

        def pair(previous: np.ndarray, current: np.ndarray) -> FlowPair | None:
            if previous.shape != current.shape or not flow_fits(current):
                return None
            if not hasattr(local, "estimator"):
                local.estimator = FlowEstimator(self.estimator.preset, self.estimator.min_field_side)
            return flow_pair(local.estimator, previous, current, self.flow)

        pending: deque = deque()
        previous = None
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vidup-flow") as pool:
            for frame in frames:
                small = self._for_flow(to_8bit(frame))
                pending.append((frame, None if previous is None else pool.submit(pair, previous, small)))
                previous = small
                if len(pending) > 2 * workers:
                    frame_out, future = pending.popleft()
                    yield self.analyse(frame_out, None if future is None else future.result())
            while pending:
                frame_out, future = pending.popleft()
                yield self.analyse(frame_out, None if future is None else future.result())


class TemporalTracker:
    def __init__(self, analyser: MotionAnalyser | None = None):
        self.analyser = analyser or MotionAnalyser()
        self.reset()

    @classmethod
    def from_config(cls, t: TemporalConfig) -> "TemporalTracker":
        return cls(MotionAnalyser.from_config(t))

    @property
    def cuts(self) -> list[int]:
        return self.analyser.cuts

    def reset(self, declared: bool = True) -> None:
        """A cut: nothing from before may reach the next frame."""
        self._previous_output: np.ndarray | None = None
        self._carry: object = None
        self._index_in_shot = 0
        if declared:
            self.analyser.reset()

    def prior_for(self, frame: np.ndarray, size: tuple[int, int], motion: Motion | None = None) -> TemporalPrior | None:
        """The prior for `frame` (uint8 or uint16), given its `motion` (analysed here when not given)."""
        if motion is None:
            motion = self.analyser.analyse(frame)
        if motion.cut:
            self.reset(declared=False)
            return None
        if motion.flows is None or self._previous_output is None or self._previous_output.shape[1::-1] != tuple(size):
            return None
        return TemporalPrior(motion.flows, size, self._previous_output, self._index_in_shot, self._carry)

    def commit(self, output: np.ndarray, carry: object = None) -> None:
        self._previous_output = output
        self._carry = carry
        self._index_in_shot += 1
