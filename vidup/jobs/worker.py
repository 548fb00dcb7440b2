"""Runs segments: the engine loads once per worker, and each segment gets fresh temporal state, the plan's cuts
and the configured memory footprint, so its file depends on nothing but the plan. The same worker runs in the
job's own process (one local worker) and inside a Ray actor."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Callable

from vidup.config import VidupConfig
from vidup.engines.base import load_engine, settled_values
from vidup.engines.contract import Engine, Shrinkable
from vidup.frame_path import frame_path
from vidup.errors import JobError
from vidup.jobs.plan import Segment
from vidup.jobs.segments import SegmentEncoder, SegmentFile
from vidup.report import StageTimes
from vidup.upscaler import Upscaler
from vidup.video.describe import OutputDescription
from vidup.video.timing import Position
from vidup.video.reader import VideoInfo, VideoReader


@dataclass
class JobSpec:
    """What every segment of a job shares, decided once by the job."""

    input: Path
    info: VideoInfo
    description: OutputDescription
    config: VidupConfig
    suffix: str  # the output's extension: segments are encoded with its container's flags
    shift: float  # seconds: the output's time zero on the input's clock


@dataclass
class SegmentResult:
    segment: Segment
    file: SegmentFile
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    times: StageTimes
    settled: dict  # what "auto" became on the machine that ran the segment


class SegmentWorker:
    def __init__(
        self,
        config: VidupConfig,
        engine: Engine | None = None,
        engine_factory: Callable[[VidupConfig], Engine] | None = None,
    ):
        self.config = config
        self.engine = engine if engine is not None else (engine_factory or load_engine)(config)
        self._footprint = self.engine.footprint() if isinstance(self.engine, Shrinkable) else None
        self.segments_run = 0

    def run(
        self,
        job: JobSpec,
        segment: Segment,
        folder: Path,
        input_path: Path | None = None,
        on_frame: Callable[[], None] | None = None,
    ) -> SegmentResult:
        """Encode `segment` into `folder / segment.name`. `input_path`: where this worker finds the input (a copy
        on another machine), if not at `job.input`."""
        if self._footprint is not None:
            self.engine.set_footprint(self._footprint)
        upscaler = Upscaler(job.config, self.engine, job.description)
        upscaler.follow_plan(segment.cuts)
        reader = VideoReader(
            input_path or job.input, job.info, on_decode_error=job.config.on_decode_error, description=job.description
        )
        start = Position(seconds=segment.read_from) if segment.read_from else None
        times = StageTimes()
        encoder = SegmentEncoder(
            folder / segment.name, job.description, job.config.output, job.suffix, job.shift, segment.first
        )
        try:
            # Closed only once the pipeline is done with it: on an error or an interrupt its decode thread may
            # still be inside the generator, and the pipeline stops that thread itself.
            frames = reader.frames(start, None)
            outputs = frame_path(islice(frames, segment.frames_run), upscaler, times, job.config.pipeline)
            for ran, (frame, out) in enumerate(outputs):
                if ran == 0 and frame.pts != segment.first_pts:
                    raise JobError(
                        f"{job.input}: seeking to segment {segment.index} landed on pts {frame.pts}, "
                        f"not {segment.first_pts}; rerun with --fresh"
                    )
                if ran < segment.warmup:
                    continue
                t0 = time.perf_counter()
                encoder.encode(out, frame.pts, frame.time_base)
                times.encode += time.perf_counter() - t0
                if on_frame is not None:
                    on_frame()
            frames.close()
            if encoder.frames != segment.count:
                raise JobError(
                    f"{job.input}: segment {segment.index} holds {encoder.frames} frames, the plan says "
                    f"{segment.count}; the file changed or decodes differently: rerun with --fresh"
                )
            file = encoder.finish()
        except BaseException:
            encoder.abort()
            raise
        self.segments_run += 1
        return SegmentResult(
            segment, file, tuple(upscaler.warnings), tuple(upscaler.notes), times, settled_values(upscaler.config)
        )
