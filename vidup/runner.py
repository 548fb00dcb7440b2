"""The one loop that joins reader, engine and writer. The CLI, the Python API and filter mode all come here."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from vidup.config import VidupConfig
from vidup.engines.base import Engine, load_engine
from vidup.errors import ConfigError, TruncatedInputError
from vidup.pipeline import run_pipeline
from vidup.temporal.state import Motion, TemporalTracker
from vidup.video.colour import frame_to_rgb
from vidup.video.deinterlace import decide
from vidup.video.describe import OutputDescription, describe_output
from vidup.video.hdr import DisplayReferredPQ, ToneMapToSdr
from vidup.video.reader import Frame, Position, Repairs, VideoInfo, VideoReader, probe, sniff_interlacing
from vidup.video.writer import VideoWriter, check_encoder, check_output_path

log = logging.getLogger("vidup")
MIN_FLOW_SIDE = 12  # DIS optical flow needs frames at least this big on each side


@dataclass
class StageTimes:
    """Seconds each stage was busy (stages overlap in the pipeline, so these can add up to more than the wall
    time). The engine's time includes what it waited for from the stages before it."""

    decode: float = 0.0
    analysis: float = 0.0  # cut detection and optical flow on the input
    engine: float = 0.0
    encode: float = 0.0


@dataclass
class RunReport:
    output: Path
    frames: int
    seconds: float
    size: tuple[int, int]
    packets_copied: int
    times: StageTimes = field(default_factory=StageTimes)
    repairs: Repairs = field(default_factory=Repairs)
    notes: tuple[str, ...] = ()  # what the output does differently from the source, said once
    description: OutputDescription | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def describe_clip(info: VideoInfo, config: VidupConfig, codec: str | None = None) -> OutputDescription:
    """The clip's output description, with the deinterlacing decision (idet where the flags do not say)."""
    interlaced = info.source.interlaced
    if interlaced is None and config.deinterlace == "auto":
        interlaced = sniff_interlacing(info.path, info, config.idet_frames)
    mode, note = decide(config.deinterlace, interlaced)
    description = describe_output(info.source, config, codec, mode)
    return replace(description, notes=((note,) if note else ()) + description.notes)


class Upscaler:
    """Frame-level upscaling with the clip's state (target size, engine, temporal state), shared by every entry
    point. `upscale(frames)` takes HxWx3 RGB arrays (uint8, or uint16 for deep sources) or `av.VideoFrame`s and
    yields upscaled arrays of the same dtype. With a `description`, every frame goes to its size and colour path;
    without one, the size follows the config for each input size."""

    def __init__(self, config: VidupConfig, engine: Engine | None = None,
                 description: OutputDescription | None = None):
        self.config = config.validate()
        self.description = description
        self.engine = engine or load_engine(self.config)
        self._size_for: dict[tuple[int, int], tuple[int, int]] = {}
        self.notes: list[str] = []
        t = self.config.temporal
        self.temporal = (TemporalTracker(t.flow_preset, t.photometric_threshold, t.shot_threshold, t.flow_max_side)
                         if t.enabled else None)
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

    def _check_flow_size(self, rgb: np.ndarray) -> None:
        if self.temporal is not None and min(rgb.shape[:2]) < MIN_FLOW_SIDE:
            self.temporal = None
            self.notes.append(f"frames of {rgb.shape[1]}x{rgb.shape[0]} are too small for optical flow "
                              f"(under {MIN_FLOW_SIDE} px): temporal coherence is off")

    def analyse(self, rgb: np.ndarray) -> Motion | None:
        """The input-only half of temporal coherence (cuts, flow). Can run ahead, in another thread."""
        self._check_flow_size(rgb)
        return None if self.temporal is None else self.temporal.analyser.analyse(rgb)

    @property
    def flow_workers(self) -> int:
        workers = self.config.temporal.flow_workers
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

    def _upscale_one(self, rgb: np.ndarray, motion: Motion | None, prepared=None) -> np.ndarray:
        """One frame, already through the pre-engine colour transform."""
        size = self.target_size(rgb.shape[1], rgb.shape[0])
        self._check_flow_size(rgb)
        extra = {"prepared": prepared} if prepared is not None else {}
        if self.temporal is None:
            out = self.engine.upscale(rgb, size, **extra)
        else:
            prior = self.temporal.prior_for(rgb, size, motion)
            out = self.engine.upscale(rgb, size, prior=prior, **extra)
            self.temporal.commit(out, getattr(self.engine, "temporal_extras", lambda: None)())
        return self._after(out) if self._after is not None else out

    def upscale_stream(self, items: Iterable[tuple[np.ndarray, Motion | None]]) -> Iterator[np.ndarray]:
        """(frame, motion) pairs in (motion None: analysed here), upscaled frames out, in order. An engine that
        batches (the SR network) gets runs of up to its batch size; the rest of each frame is finished in order."""
        batch = max(1, getattr(self.engine, "batch", 1))
        pending: list[tuple[np.ndarray, Motion | None]] = []

        def flush():
            frames = [frame if self._before is None else self._before(frame) for frame, _ in pending]
            prepared = [None] * len(pending)
            if len(pending) > 1 and hasattr(self.engine, "prepare"):
                size = self.target_size(frames[0].shape[1], frames[0].shape[0])
                prepared = self.engine.prepare(frames, size)
            for frame, (_, motion), ready in zip(frames, pending, prepared):
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


def progress_bar(total: int | None, quiet: bool, description: str):
    from tqdm import tqdm

    # On a terminal the bar redraws in place; into a log file every redraw is a new line, so redraw rarely.
    interactive = sys.stderr.isatty()
    return tqdm(total=total, disable=quiet, unit="frame", desc=description, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1, mininterval=0.1 if interactive else 10.0)


def _expected_frames(info: VideoInfo, description: OutputDescription, start: Position | None,
                     end: Position | None) -> int | None:
    """Best estimate of how many frames the window holds, for the progress bar's ETA only."""
    per_frame = 2 if description.deinterlace == "field" else 1
    total = info.frame_count * per_frame if info.frame_count else None
    rate = float(description.frame_rate or 25)
    if total is None and info.duration:
        total = int(round(info.duration * rate))
    if total is None:
        return None
    first = 0 if start is None else start.frame if start.frame is not None else int(start.seconds * rate)
    stop = total if end is None else end.frame if end.frame is not None else int(end.seconds * rate)
    return max(0, min(total, stop) - first)


def _timed(items: Iterable, times: StageTimes, field_name: str) -> Iterator:
    """Yields `items`, adding the time spent producing each to `times.<field_name>`."""
    items = iter(items)
    while True:
        started = time.perf_counter()
        item = next(items, _DONE)
        setattr(times, field_name, getattr(times, field_name) + time.perf_counter() - started)
        if item is _DONE:
            return
        yield item


_DONE = object()


def frame_path(frames: Iterable[Frame], upscaler: Upscaler, times: StageTimes, overlap: bool = True
               ) -> Iterator[tuple[Frame, np.ndarray]]:
    """(decoded frame, upscaled frame) pairs, in order. With `overlap`, decoding, motion analysis and the engine
    run in threads of their own while the caller encodes (`vidup.pipeline`); without it, one after another."""

    def analyse(items: Iterator[Frame]) -> Iterator[tuple[Frame, Motion | None]]:
        waiting: deque[Frame] = deque()

        def feed():
            for frame in items:
                waiting.append(frame)
                yield frame.rgb

        for motion in _timed(upscaler.analyse_stream(feed()), times, "analysis"):
            yield waiting.popleft(), motion

    def engine(items: Iterator[tuple[Frame, Motion | None]]) -> Iterator[tuple[Frame, np.ndarray]]:
        waiting: deque[Frame] = deque()

        def feed():
            for frame, motion in items:
                waiting.append(frame)
                yield frame.rgb, motion

        for out in _timed(upscaler.upscale_stream(feed()), times, "engine"):
            yield waiting.popleft(), out

    decoded = _timed(frames, times, "decode")
    if not overlap:
        yield from engine(analyse(decoded))
        return
    yield from run_pipeline(decoded, analyse, engine)


def upscale_video(input_path: str | Path, output_path: str | Path, config: VidupConfig,
                  engine: Engine | None = None) -> RunReport:
    """Upscale a clip into a new file. Everything that can be checked is checked before the model loads."""
    config = config.validate()
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, input_path if input_path.exists() else None, config.overwrite)
    check_encoder(config.output.codec)
    info = probe(input_path)
    description = describe_clip(info, config, config.output.codec)
    start, end = Position.parse(config.start), Position.parse(config.end)
    repairs = Repairs()
    if info.truncated:
        if config.on_decode_error != "skip":
            raise TruncatedInputError(f"{input_path}: truncated: {info.truncated}. Pass --on-decode-error skip to "
                                      "upscale what is there")
        repairs.incomplete = info.truncated
    # The output's time zero: a trim's first frame, or the first frame where a wrapped clock made it negative
    # (MP4 edit lists would hide every frame before zero). Otherwise the source's own timestamps stay.
    origin = info.start_time if info.start_time < 0 else None
    if origin is not None:
        repairs.shifted_start = -origin
    trimmed = start is not None or end is not None
    window = None
    if trimmed or origin is not None:
        window = (origin if start is None else None, None if end is None or end.seconds is None
                  else info.start_time + end.seconds)

    started = time.perf_counter()
    times = StageTimes()
    writer = VideoWriter(output_path, description, config.output, source=info, window=window,
                         overwrite=config.overwrite, repairs=repairs,
                         timecode_offset=0.0 if start is None else start.seconds_at(float(description.frame_rate or 25)))
    count = 0
    with writer:
        upscaler = Upscaler(config, engine, description)  # the model loads only after every input check passed
        reader = VideoReader(input_path, info, on_decode_error=config.on_decode_error, description=description)
        reader.repairs = repairs
        with progress_bar(_expected_frames(info, description, start, end), config.quiet, input_path.name) as bar:
            for frame, out in frame_path(reader.frames(start, end), upscaler, times, config.pipeline):
                if count == 0 and start is not None:
                    # Audio starts with the first frame kept, wherever the seek landed.
                    writer.window = (frame.time if frame.time is not None else info.start_time, writer.window[1])
                t0 = time.perf_counter()
                writer.write(out, frame.pts, frame.time_base)
                times.encode += time.perf_counter() - t0
                count += 1
                bar.update(1)
        if count == 0:
            raise ConfigError(f"the selected range of {input_path} holds no frames (start={config.start}, end={config.end})")
        if end is not None and reader.last_time is not None:
            # The window closes one frame after the last frame kept, so copied audio stops with the video.
            writer.window = (writer.window[0], reader.last_time + 1.0 / float(description.frame_rate or 25))
        t3 = time.perf_counter()
    times.encode += time.perf_counter() - t3  # flush and finalise
    notes = tuple(description.notes) + tuple(writer.notes) + tuple(upscaler.notes)
    return RunReport(output=output_path, frames=count, seconds=time.perf_counter() - started,
                     size=description.size, packets_copied=writer.packets_copied, times=times, repairs=repairs,
                     notes=notes, description=description)
