"""The segment plan: where a clip is cut into independently encoded segments. Decided once per job from the
input and the config alone (never from the worker count or an interruption), and stored in the manifest.

A pre-pass decodes the clip, finds the cuts with the streaming path's own `MotionAnalyser`, and notes
each frame's time. Segments end at cuts: consecutive shots share a segment up to `job.segment_frames`, and a
longer shot is split inside into near-equal pieces, each run from `job.warmup_frames` earlier (frames that
rebuild the temporal state and are not written). Each segment carries its cuts, so a segment run alone decides
exactly what the plan decided.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

from vidup.config import VidupConfig
from vidup.temporal.state import MotionAnalyser
from vidup.video.describe import OutputDescription
from vidup.video.timing import Position
from vidup.video.repairs import Repairs
from vidup.video.reader import VideoInfo, VideoReader


@dataclass(frozen=True)
class Segment:
    index: int
    first: int  # first frame written, counted from the clip's (or the trim's) first frame
    count: int  # frames written
    warmup: int  # frames run before `first` and not written
    read_from: float | None  # seconds from the clip's start of the first frame run (None: the window's start)
    first_pts: int | None  # pts of the first frame run (checked by the worker: seeking must land exactly there)
    cuts: tuple[int, ...]  # frames that start a shot, counted from the first frame run (0 always)

    @property
    def frames_run(self) -> int:
        return self.warmup + self.count

    @property
    def name(self) -> str:
        return f"segment-{self.index:05d}.vseg"


@dataclass
class Plan:
    frames: int
    cuts: tuple[int, ...]  # frames that start a shot (0 included)
    segments: tuple[Segment, ...]
    first_time: float | None  # time of the first frame (input clock): a trim's audio starts here
    last_time: float | None  # time of the last frame
    repairs: dict = field(default_factory=dict)
    seconds: float = 0.0  # the pre-pass's wall time

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        segments = tuple(Segment(**dict(s, cuts=tuple(s["cuts"]))) for s in data["segments"])
        return cls(**dict(data, cuts=tuple(data["cuts"]), segments=segments))


def split_shots(
    frames: int,
    cuts: list[int],
    segment_frames: int,
    warmup_frames: int,
    times: list[float | None],
    pts: list[int | None],
    seekable: bool,
) -> tuple[Segment, ...]:
    """Segments from the shot starts `cuts` (sorted, 0 first). `times`/`pts`: of every frame. A clip that cannot
    be seeked frame-accurately (frames without timestamps, repaired damage) stays one segment."""
    if frames == 0:
        return ()
    if not seekable:
        return (Segment(0, 0, frames, 0, None, pts[0], tuple(cuts)),)
    bounds = list(cuts) + [frames]
    pieces: list[tuple[int, int, int, list[int]]] = []  # first, count, warmup, shot starts (absolute)
    group: list[int] = []  # starts of the whole shots gathered into the open segment
    group_end = 0

    def close_group():
        if group:
            pieces.append((group[0], group_end - group[0], 0, list(group)))
            group.clear()

    for start, end in zip(bounds[:-1], bounds[1:]):
        length = end - start
        if length > segment_frames:  # split inside, into near-equal pieces
            close_group()
            parts = math.ceil(length / segment_frames)
            edges = [start + round(i * length / parts) for i in range(parts + 1)]
            for a, b in zip(edges[:-1], edges[1:]):
                pieces.append((a, b - a, min(warmup_frames, a - start), [a] if a == start else []))
            continue
        if group and end - group[0] > segment_frames:
            close_group()
        group.append(start)
        group_end = end
    close_group()
    segments = []
    for index, (first, count, warm, shot_starts) in enumerate(pieces):
        read = first - warm
        local_cuts = sorted({0} | {c - read for c in shot_starts})
        segments.append(Segment(index, first, count, warm, times[read], pts[read], tuple(local_cuts)))
    return tuple(segments)


def make_plan(
    info: VideoInfo, description: OutputDescription, config: VidupConfig, start: Position | None, end: Position | None
) -> Plan:
    """The pre-pass: decode the window, find the cuts, split into segments. The frames go through the same
    `MotionAnalyser` the streaming path uses, at the same resolution (it scales them to temporal.flow.max_side
    itself), so a preview or a filter run decides every cut, borderline ones included, as the job does."""
    started = time.perf_counter()
    reader = VideoReader(info.path, info, on_decode_error=config.on_decode_error, description=description)
    analyser = MotionAnalyser.from_config(config.temporal)
    cuts, times, pts = [], [], []
    for index, frame in enumerate(reader.frames(start, end)):
        if analyser.analyse(frame.rgb, need_flow=False).cut:
            cuts.append(index)
        times.append(None if frame.time is None else frame.time - info.start_time)
        pts.append(frame.pts)
    repairs = reader.repairs
    damaged = any(
        getattr(repairs, name) for name in ("damaged_packets", "read_errors", "lost_frames", "repaired_timestamps")
    )
    seekable = not damaged and all(p is not None for p in pts)
    job = config.job
    segments = split_shots(len(times), cuts, job.segment_frames, job.warmup_frames, times, pts, seekable)
    return Plan(
        frames=len(times),
        cuts=tuple(cuts),
        segments=segments,
        first_time=reader.first_time,
        last_time=reader.last_time,
        repairs=asdict(repairs),
        seconds=time.perf_counter() - started,
    )


def repairs_from(plan: Plan) -> Repairs:
    return Repairs(**plan.repairs)
