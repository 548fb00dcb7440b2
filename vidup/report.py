"""What a run reports: per-stage times and the run's outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vidup.video.describe import OutputDescription
from vidup.video.repairs import Repairs


@dataclass
class StageTimes:
    """Seconds each stage was busy (stages overlap in the pipeline, so these can add up to more than the wall
    time). The engine's time includes what it waited for from the stages before it."""

    decode: float = 0.0
    analysis: float = 0.0  # cut detection and optical flow on the input
    engine: float = 0.0
    encode: float = 0.0
    plan: float = 0.0  # the job's pre-pass (wall time)
    assemble: float = 0.0  # concatenating the segments into the output (wall time)


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
    warnings: tuple[str, ...] = ()  # out-of-memory backoffs
    segments: int = 1
    segments_run: int = 1  # segments computed by this run (the rest were resumed)
    segments_resumed: int = 0
    ray_startup: float | None = None  # seconds to start or join the Ray cluster and its workers
    settled: dict = field(default_factory=dict)  # what every "auto" became (device, precision, batch, backend)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0
