"""The one loop that joins reader, engine and writer. The CLI, the Python API and filter mode all come here."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from vidup.config import VidupConfig
from vidup.engines.base import Engine, load_engine
from vidup.errors import ConfigError
from vidup.temporal.state import TemporalTracker
from vidup.video.reader import Frame, Position, VideoInfo, VideoReader, frame_to_rgb, probe
from vidup.video.writer import VideoWriter, check_output_path


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

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class Upscaler:
    """Frame-level upscaling with the clip's state (target size, engine), shared by every entry point.

    `upscale(frames)` takes HxWx3 uint8 arrays or `av.VideoFrame`s and yields upscaled arrays.
    """

    def __init__(self, config: VidupConfig, engine: Engine | None = None):
        self.config = config.validate()
        self.engine = engine or load_engine(self.config)
        self._size_for: dict[tuple[int, int], tuple[int, int]] = {}
        t = self.config.temporal
        self.temporal = TemporalTracker(t.flow_preset, t.photometric_threshold, t.shot_threshold) if t.enabled else None

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        if (width, height) not in self._size_for:
            self._size_for[(width, height)] = self.config.size_spec.resolve(width, height)
        return self._size_for[(width, height)]

    def reset(self) -> None:
        """Mark a cut: nothing from earlier frames may influence the next one."""
        if self.temporal is not None:
            self.temporal.reset()

    def upscale_frame(self, rgb: np.ndarray) -> np.ndarray:
        if isinstance(rgb, av.VideoFrame):
            rgb = frame_to_rgb(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise TypeError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
        h, w = rgb.shape[:2]
        size = self.target_size(w, h)
        if self.temporal is None:
            return self.engine.upscale(rgb, size)
        prior = self.temporal.prior_for(rgb, size)
        out = self.engine.upscale(rgb, size, prior=prior)
        self.temporal.commit(rgb, out, getattr(self.engine, "temporal_extras", lambda: None)())
        return out

    def upscale(self, frames: Iterable[np.ndarray | av.VideoFrame]) -> Iterator[np.ndarray]:
        for frame in frames:
            yield self.upscale_frame(frame)


def _progress(total: int | None, quiet: bool, description: str):
    from tqdm import tqdm

    # On a terminal the bar redraws in place; into a log file every redraw is a new line, so redraw rarely.
    interactive = sys.stderr.isatty()
    return tqdm(total=total, disable=quiet, unit="frame", desc=description, file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1, mininterval=0.1 if interactive else 10.0)


def _expected_frames(info: VideoInfo, start: Position | None, end: Position | None) -> int | None:
    """Best estimate of how many frames the window holds, for the progress bar's ETA only."""
    total = info.frame_count
    if total is None and info.duration and info.frame_rate:
        total = int(round(info.duration * info.frame_rate))
    if total is None:
        return None
    rate = info.fps
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
    start, end = Position.parse(config.start), Position.parse(config.end)
    size = config.size_spec.resolve(info.width, info.height)
    trimmed = start is not None or end is not None
    window = None
    if trimmed:
        window = (None if start is None or start.seconds is None else info.start_time + start.seconds,
                  None if end is None or end.seconds is None else info.start_time + end.seconds)

    started = time.perf_counter()
    times = StageTimes()
    writer = VideoWriter(output_path, width=size[0], height=size[1], frame_rate=info.frame_rate,
                         time_base=info.time_base, output=config.output, source=info, window=window,
                         overwrite=config.overwrite)
    count = 0
    with writer:
        upscaler = Upscaler(config, engine)  # the model loads only after every input check passed
        reader = VideoReader(input_path, info, on_decode_error=config.on_decode_error)
        frames = reader.frames(start, end)
        last: Frame | None = None
        with _progress(_expected_frames(info, start, end), config.quiet, input_path.name) as bar:
            while True:
                t0 = time.perf_counter()
                frame = next(frames, None)
                t1 = time.perf_counter()
                times.decode += t1 - t0
                if frame is None:
                    break
                if count == 0 and trimmed and start is not None and start.frame is not None:
                    writer.window = (frame.time if frame.time is not None else info.start_time, writer.window[1])
                out = upscaler.upscale_frame(frame.rgb)
                t2 = time.perf_counter()
                writer.write(out, frame.pts, frame.time_base)
                times.engine += t2 - t1
                times.encode += time.perf_counter() - t2
                count += 1
                last = frame
                bar.update(1)
        if count == 0:
            raise ConfigError(f"the selected range of {input_path} holds no frames (start={config.start}, end={config.end})")
        if end is not None and end.frame is not None and last is not None and last.time is not None:
            # The window closes one frame after the last frame kept, so copied audio stops with the video.
            writer.window = (writer.window[0], last.time + 1.0 / info.fps)
        t3 = time.perf_counter()
    times.encode += time.perf_counter() - t3  # flush and finalise
    return RunReport(output=output_path, frames=count, seconds=time.perf_counter() - started, size=size,
                     packets_copied=writer.packets_copied, times=times)
