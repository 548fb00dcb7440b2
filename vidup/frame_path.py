"""One frame's way through a run: decode, motion analysis, the engine, in overlapping threads (`vidup.pipeline`),
timed per stage."""

from __future__ import annotations

import time
from collections import deque
from typing import Iterable, Iterator

import numpy as np

from vidup.pipeline import run_pipeline
from vidup.report import StageTimes
from vidup.temporal.state import Motion
from vidup.upscaler import Upscaler
from vidup.video.reader import Frame


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


def frame_path(
    frames: Iterable[Frame], upscaler: Upscaler, times: StageTimes, overlap: bool = True
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
