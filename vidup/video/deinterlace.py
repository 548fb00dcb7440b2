"""Interlaced sources: detection and FFmpeg's bwdif deinterlacer through PyAV's filter graph.

Detection reads the stream's field order and the frames' interlace flags; where neither says (a stream with no
field flags), FFmpeg's `idet` looks at the first frames. Deinterlacing runs before any engine, so networks never
see combing:

    field   one frame per field (25i -> 50p): every moment the camera captured stays, which is what sport
            needs (a ball moves between the fields of one frame). Timestamps: the second field of a frame sits
            half a frame later, exactly (the time base halves).
    frame   one frame per frame (25i -> 25p): the frame count and timestamps stay as they are.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import av
import av.error

from vidup.video.timing import NOMINAL_RATE

FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tff", 3: "bff", 4: "bff", 5: "tff"}  # display order


def field_order_name(code: int | None) -> str:
    return FIELD_ORDERS.get(int(code or 0), "unknown")


def interlaced_from_flags(field_order: str, first_frame_interlaced: bool) -> bool | None:
    """True / False where the stream says, None where it does not (progressive streams often carry no flag)."""
    if field_order in ("tff", "bff") or first_frame_interlaced:
        return True
    if field_order == "progressive":
        return False
    return None


def decide(requested: str, interlaced: bool | None) -> tuple[str, str | None]:
    """(what the reader does: off | frame | field, a note for the user or None)."""
    if requested == "off":
        return "off", (
            "the source is interlaced and --deinterlace off: its combing is upscaled as it is" if interlaced else None
        )
    if requested in ("field", "frame"):
        note = None if interlaced else f"--deinterlace {requested} on a source that is not flagged interlaced"
        return requested, note
    if interlaced:
        return "field", "interlaced source: deinterlaced at field rate (bwdif), doubling the frame rate"
    return "off", None


def _pull_all(graph) -> list[av.VideoFrame]:
    frames = []
    while True:
        try:
            frames.append(graph.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            return frames


class Deinterlacer:
    """bwdif over a stream of decoded frames. The graph is built from the first frame it sees."""

    def __init__(self, mode: str, time_base: Fraction):
        self.mode = mode
        self.time_base = time_base
        self._graph = None

    def _build(self, frame: av.VideoFrame) -> None:
        graph = av.filter.Graph()
        source = graph.add_buffer(
            width=frame.width,
            height=frame.height,
            format=frame.format.name,
            time_base=frame.time_base or self.time_base,
        )
        mode = "send_field" if self.mode == "field" else "send_frame"
        bwdif = graph.add("bwdif", f"mode={mode}:parity=auto:deint=all")
        sink = graph.add("buffersink")
        source.link_to(bwdif)
        bwdif.link_to(sink)
        graph.configure()
        self._graph = graph

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        if self._graph is None:
            self._build(frame)
        self._graph.push(frame)
        return _pull_all(self._graph)

    def flush(self) -> list[av.VideoFrame]:
        if self._graph is None:
            return []
        self._graph.push(None)
        return _pull_all(self._graph)


def detect_interlacing(frames: Iterator[av.VideoFrame], count: int) -> bool:
    """FFmpeg's idet over the first `count` frames: interlaced when tff or bff detections outnumber progressive
    ones (multi-frame detection, which is the robust one)."""
    graph = None
    last = None
    for i, frame in enumerate(frames):
        if i >= count:
            break
        if graph is None:
            graph = av.filter.Graph()
            source = graph.add_buffer(
                width=frame.width,
                height=frame.height,
                format=frame.format.name,
                time_base=frame.time_base or 1 / NOMINAL_RATE,
            )
            idet = graph.add("idet")
            sink = graph.add("buffersink")
            source.link_to(idet)
            idet.link_to(sink)
            graph.configure()
        graph.push(frame)
        pulled = _pull_all(graph)
        if pulled:
            last = pulled[-1]
    if last is None:
        return False
    stats = dict(last.metadata)
    number = lambda key: float(stats.get(f"lavfi.idet.multiple.{key}", 0))  # noqa: E731
    return number("tff") + number("bff") > number("progressive")
