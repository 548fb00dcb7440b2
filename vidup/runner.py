"""The one loop that joins reader, engine and writer. The CLI, the Python API and filter mode all come here."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from vidup.config import VidupConfig
from vidup.engines.base import Engine, load_engine
from vidup.errors import ConfigError, TruncatedInputError
from vidup.temporal.state import TemporalTracker
from vidup.video.colour import frame_to_rgb
from vidup.video.deinterlace import decide
from vidup.video.describe import OutputDescription, describe_output
from vidup.video.hdr import DisplayReferredPQ, ToneMapToSdr
from vidup.video.reader import Position, Repairs, VideoInfo, VideoReader, probe, sniff_interlacing
from vidup.video.writer import VideoWriter, check_output_path

log = logging.getLogger("vidup")
MIN_FLOW_SIDE = 12  # DIS optical flow needs frames at least this big on each side


@dataclass
class StageTimes:
    """Wall seconds spent in each stage of the loop."""

    decode: float = 0.0
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
        self.temporal = TemporalTracker(t.flow_preset, t.photometric_threshold, t.shot_threshold) if t.enabled else None
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

    def _temporal_for(self, rgb: np.ndarray) -> TemporalTracker | None:
        if self.temporal is not None and min(rgb.shape[:2]) < MIN_FLOW_SIDE:
            self.temporal = None
            self.notes.append(f"frames of {rgb.shape[1]}x{rgb.shape[0]} are too small for optical flow "
                              f"(under {MIN_FLOW_SIDE} px): temporal coherence is off")
        return self.temporal

    def upscale_frame(self, rgb: np.ndarray) -> np.ndarray:
        if isinstance(rgb, av.VideoFrame):
            rgb = frame_to_rgb(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype not in (np.uint8, np.uint16):
            raise TypeError(f"expected an HxWx3 uint8 or uint16 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
        h, w = rgb.shape[:2]
        size = self.target_size(w, h)
        if self._before is not None:
            rgb = self._before(rgb)
        temporal = self._temporal_for(rgb)
        if temporal is None:
            out = self.engine.upscale(rgb, size)
        else:
            prior = temporal.prior_for(rgb, size)
            out = self.engine.upscale(rgb, size, prior=prior)
            temporal.commit(rgb, out, getattr(self.engine, "temporal_extras", lambda: None)())
        return self._after(out) if self._after is not None else out

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


def upscale_video(input_path: str | Path, output_path: str | Path, config: VidupConfig,
                  engine: Engine | None = None) -> RunReport:
    """Upscale a clip into a new file. Everything that can be checked is checked before the model loads."""
    config = config.validate()
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, input_path if input_path.exists() else None, config.overwrite)
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
        frames = reader.frames(start, end)
        with progress_bar(_expected_frames(info, description, start, end), config.quiet, input_path.name) as bar:
            while True:
                t0 = time.perf_counter()
                frame = next(frames, None)
                t1 = time.perf_counter()
                times.decode += t1 - t0
                if frame is None:
                    break
                if count == 0 and start is not None:
                    # Audio starts with the first frame kept, wherever the seek landed.
                    writer.window = (frame.time if frame.time is not None else info.start_time, writer.window[1])
                out = upscaler.upscale_frame(frame.rgb)
                t2 = time.perf_counter()
                writer.write(out, frame.pts, frame.time_base)
                times.engine += t2 - t1
                times.encode += time.perf_counter() - t2
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
