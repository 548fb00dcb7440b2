"""`Upscaler`: frame-level upscaling with the clip's state (target size, engine, temporal state, colour path). Every
entry point runs frames through it: file jobs (per segment), filter mode, previews and the Python API."""

from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Iterator

import av
import numpy as np

from vidup.backoff import with_backoff
from vidup.config import VidupConfig
from vidup.engines.base import load_engine, settle
from vidup.engines.contract import Batched, Engine, EngineOutput
from vidup.temporal.flow import MIN_FLOW_SIDE, flow_fits
from vidup.temporal.state import Motion, TemporalTracker
from vidup.video.colour import frame_to_rgb
from vidup.video.describe import OutputDescription
from vidup.video.hdr import DisplayReferredPQ, ToneMapToSdr

log = logging.getLogger("vidup")


class Upscaler:
    """Frame-level upscaling with the clip's state (target size, engine, temporal state), shared by every entry
    point. `upscale(frames)` takes HxWx3 RGB arrays (uint8, or uint16 for deep sources) or `av.VideoFrame`s and
    yields upscaled arrays of the same dtype. With a `description`, every frame goes to its size and colour path;
    without one, the size follows the config for each input size."""

    def __init__(
        self,
        config: VidupConfig,
        engine: Engine | None = None,
        description: OutputDescription | None = None,
        engine_factory: Callable[[VidupConfig], Engine] | None = None,
    ):
        self.config = settle(config.validate())  # every "auto" resolved once, on the machine that runs the engine
        self.description = description
        self.engine = engine or (engine_factory or load_engine)(self.config)
        self._size_for: dict[tuple[int, int], tuple[int, int]] = {}
        self.notes: list[str] = []
        self.warnings: list[str] = []  # out-of-memory backoffs
        self.frames_done = 0
        self.last: EngineOutput | None = None  # the engine's output for the last frame (its stages, for previews)
        t = self.config.temporal
        self.temporal = TemporalTracker.from_config(t) if t.enabled else None
        self._before, self._after = self._colour_path(description)

    def _colour_path(self, d: OutputDescription | None):
        """What runs around the engine: tone mapping to SDR before it, or PQ <-> display-referred around it."""
        colour = self.config.colour
        if d is None or not d.source.colour.hdr:
            return None, None
        if d.tonemap:
            return ToneMapToSdr(d.source.colour.transfer, colour.sdr_white_nits, colour.hdr_peak_nits), None
        if d.source.colour.hdr == "pq" and colour.pq_working == "display":
            peak = max(colour.hdr_peak_nits, (d.hdr.max_luminance or 0) / 10000 if d.hdr else 0)
            space = DisplayReferredPQ(peak)
            return space.forward, space.inverse
        return None, None

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        if self.description is not None:
            return self.description.size
        if (width, height) not in self._size_for:
            self._size_for[(width, height)] = self.config.size_spec.resolve(width, height)
        return self._size_for[(width, height)]

    def reset(self) -> None:
        """Mark a cut: nothing from earlier frames may influence the next one."""
        if self.temporal is not None:
            self.temporal.reset()

    def follow_plan(self, cuts) -> None:
        """From the next frame on, shots start exactly at `cuts` (counted from that frame, which starts one), as
        a job's plan decided; the detector is not asked."""
        if self.temporal is not None:
            self.temporal.reset(declared=False)  # follow_plan resets the analyser
            self.temporal.analyser.follow_plan(cuts)

    def _engine_call(self, call):
        return with_backoff(call, self.engine, f"frame {self.frames_done}", self.warnings.append)

    def _check_flow_size(self, rgb: np.ndarray) -> None:
        if self.temporal is not None and not flow_fits(rgb):
            self.temporal = None
            self.notes.append(
                f"frames of {rgb.shape[1]}x{rgb.shape[0]} are too small for optical flow "
                f"(under {MIN_FLOW_SIDE} px): temporal coherence is off"
            )

    def analyse(self, rgb: np.ndarray) -> Motion | None:
        """The input-only half of temporal coherence (cuts, flow). Can run ahead, in another thread."""
        self._check_flow_size(rgb)
        return None if self.temporal is None else self.temporal.analyser.analyse(rgb)

    @property
    def flow_workers(self) -> int:
        workers = self.config.temporal.flow.workers
        return max(1, min(4, (os.cpu_count() or 1) // 4)) if workers == "auto" else int(workers)

    def analyse_stream(self, frames: Iterable[np.ndarray]) -> Iterator[Motion | None]:
        """`analyse` over a stream; with several flow workers the flow of upcoming pairs is computed in parallel."""
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            return
        yield self.analyse(first)
        if self.temporal is None or self.flow_workers < 2:
            yield from (self.analyse(frame) for frame in frames)
            return
        yield from self.temporal.analyser.analyse_stream(frames, self.flow_workers)

    def _upscale_one(self, rgb: np.ndarray, motion: Motion | None, network=None) -> np.ndarray:
        """One frame, already through the pre-engine colour transform. `network`: its share of a batched run."""
        size = self.target_size(rgb.shape[1], rgb.shape[0])
        self._check_flow_size(rgb)
        extra = {"network": network} if network is not None else {}
        if self.temporal is not None:
            extra["prior"] = self.temporal.prior_for(rgb, size, motion)

        def run():
            try:
                return self.engine.upscale(rgb, size, **extra)
            except Exception:
                extra.pop("network", None)  # a retry recomputes the network's output with the smaller footprint
                raise

        self.last = self._engine_call(run)
        if self.temporal is not None:
            self.temporal.commit(self.last.image, self.last.carry)
        self.frames_done += 1
        out = self.last.image
        return self._after(out) if self._after is not None else out

    def upscale_stream(self, items: Iterable[tuple[np.ndarray, Motion | None]]) -> Iterator[np.ndarray]:
        """(frame, motion) pairs in (motion None: analysed here), upscaled frames out, in order. An engine that
        batches (the SR network) gets runs of up to its batch size; the rest of each frame is finished in order."""
        batched = isinstance(self.engine, Batched)
        batch = max(1, self.engine.batch) if batched else 1
        pending: list[tuple[np.ndarray, Motion | None]] = []

        def flush():
            frames = [frame if self._before is None else self._before(frame) for frame, _ in pending]
            shares = [None] * len(pending)
            if len(pending) > 1 and batched:
                size = self.target_size(frames[0].shape[1], frames[0].shape[0])
                shares = self._engine_call(lambda: self.engine.network_batch(frames, size))
            for frame, (_, motion), ready in zip(frames, pending, shares):
                yield self._upscale_one(frame, motion, ready)
            pending.clear()

        for item in items:
            pending.append(item)
            if len(pending) >= batch:
                yield from flush()
        if pending:
            yield from flush()

    def upscale_frame(self, rgb: np.ndarray) -> np.ndarray:
        if isinstance(rgb, av.VideoFrame):
            rgb = frame_to_rgb(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"expected an HxWx3 uint8 or uint16 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
        return self._upscale_one(rgb if self._before is None else self._before(rgb), None)

    def upscale(self, frames: Iterable[np.ndarray | av.VideoFrame]) -> Iterator[np.ndarray]:
        for frame in frames:
            yield self.upscale_frame(frame)
