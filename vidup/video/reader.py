"""Streaming decode with PyAV. One `VideoReader` abstraction over the container: `probe()` for facts, and an
iterator of `Frame`s that holds at most a few decoded frames at a time, whatever the clip's length."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.error
import numpy as np

from vidup.errors import (
    ConfigError,
    CorruptInputError,
    InputNotFoundError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedInputError,
)


@dataclass(frozen=True)
class StreamInfo:
    index: int
    type: str  # video | audio | subtitle | data | attachment
    codec: str
    language: str | None
    disposition: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    format: str
    width: int
    height: int
    frame_rate: Fraction | None  # average rate; exact rational (30000/1001, not 29.97)
    time_base: Fraction
    start_time: float  # seconds, of the first video frame
    duration: float | None  # seconds, when the container knows it
    duration_is_exact: bool  # True when it is the video stream's own duration, not the whole file's
    frame_count: int | None  # when the container knows it; never required
    rotation: int  # degrees of the display matrix, counter-clockwise (0 when none)
    pix_fmt: str
    codec: str
    color_primaries: int
    color_trc: int
    colorspace: int
    color_range: int
    streams: tuple[StreamInfo, ...]
    video_index: int

    @property
    def fps(self) -> float:
        """The nominal frame rate for converting between times and frame indices (25 when unknown)."""
        return float(self.frame_rate or 25)

    @property
    def passthrough_streams(self) -> tuple[StreamInfo, ...]:
        """The streams copied untouched into the output: audio and subtitles."""
        return tuple(s for s in self.streams if s.type in ("audio", "subtitle"))


@dataclass
class Frame:
    index: int  # ordinal in the input clip (counted from its first frame)
    pts: int | None
    time_base: Fraction
    rgb: np.ndarray  # HxWx3 uint8

    @property
    def time(self) -> float | None:
        return None if self.pts is None else float(self.pts * self.time_base)


def _disposition_names(stream) -> tuple[str, ...]:
    flags = stream.disposition
    return tuple(sorted(f.name.lower() for f in type(flags) if f.value and f in flags and f.name))


def _is_cover_art(stream) -> bool:
    flags = stream.disposition
    return bool(flags & type(flags).attached_pic)


def _stream_info(stream) -> StreamInfo:
    return StreamInfo(
        index=stream.index,
        type=stream.type,
        codec=stream.codec_context.codec.canonical_name if stream.codec_context else "unknown",
        language=stream.language or stream.metadata.get("language"),
        disposition=_disposition_names(stream),
        metadata=dict(stream.metadata),
    )


def _open_input(path: Path):
    if not path.exists():
        raise InputNotFoundError(f"input not found: {path}")
    if path.is_dir():
        raise NotAVideoError(f"input is a folder, not a video file: {path}")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        with open(path, "rb") as handle:
            head = handle.read(12)
        if path.stat().st_size and head[4:8] == b"ftyp":
            raise TruncatedInputError(
                f"{path}: MP4/MOV file without a readable index (moov atom); it is probably truncated"
            ) from None
        raise NotAVideoError(f"{path}: not a video FFmpeg can read ({exc.__class__.__name__})") from None


def _check_not_truncated(stream, path: Path) -> None:
    """Containers with a sample index (MP4/MOV) say where every packet lives; any past the end is missing."""
    size = path.stat().st_size
    try:
        entries = stream.index_entries
        last = entries[len(entries) - 1] if len(entries) else None
    except (AttributeError, av.error.FFmpegError, IndexError):
        return
    if last is not None and last.pos > 0 and last.pos + last.size > size:
        raise TruncatedInputError(
            f"{path}: truncated: its index expects {last.pos + last.size} bytes, the file has {size}"
        )


def _stream_duration(stream) -> float | None:
    # Matroska's muxer tags each stream with its real duration; libavformat's own per-stream figure for
    # Matroska can be the whole file's (subtitles running past the video), so the tag wins.
    tag = stream.metadata.get("DURATION")
    if tag:
        try:
            h, m, sec = tag.split(":")
            return int(h) * 3600 + int(m) * 60 + float(sec)
        except ValueError:
            pass
    if stream.duration is not None:
        return float(stream.duration * stream.time_base)
    return None


def probe(path: str | Path) -> VideoInfo:
    """Open, check and describe a clip without decoding more than its first frame."""
    path = Path(path)
    container = _open_input(path)
    try:
        videos = [s for s in container.streams if s.type == "video" and not _is_cover_art(s)]
        if not videos:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
            raise NoVideoStreamError(f"{path}: has no video stream (streams: {kinds})")
        stream = videos[0]
        _check_not_truncated(stream, path)
        first = None
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    first = frame
                    break
                if first is not None:
                    break
        except av.error.FFmpegError as exc:
            raise NotAVideoError(f"{path}: the video stream cannot be decoded: {exc}") from None
        if first is None:
            raise NotAVideoError(f"{path}: the video stream holds no decodable frame")
        cc = stream.codec_context
        duration, exact = _stream_duration(stream), True
        if duration is None and container.duration is not None:
            duration, exact = container.duration / av.time_base, False
        start = first.time if first.time is not None else 0.0
        return VideoInfo(
            path=path,
            format=container.format.name,
            width=first.width,
            height=first.height,
            frame_rate=stream.average_rate or stream.guessed_rate,
            time_base=stream.time_base or Fraction(1, 90000),
            start_time=start,
            duration=duration,
            duration_is_exact=exact,
            frame_count=stream.frames or None,
            rotation=int(first.rotation or 0),
            pix_fmt=first.format.name,
            codec=cc.name,
            color_primaries=int(first.color_primaries or 0),
            color_trc=int(first.color_trc or 0),
            colorspace=int(first.colorspace or 0),
            color_range=int(first.color_range or 0),
            streams=tuple(_stream_info(s) for s in container.streams),
            video_index=stream.index,
        )
    finally:
        container.close()


# --- frame windows ------------------------------------------------------------------------------------------

_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)s?$")


@dataclass(frozen=True)
class Position:
    """A point in a clip, given as a frame index or a time in seconds."""

    frame: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | int | None) -> "Position | None":
        if text is None or text == "":
            return None
        value = str(text).strip()
        if value.isdigit():
            return cls(frame=int(value))
        match = _TIME.match(value)
        if not match or not (value.endswith("s") or ":" in value or "." in value):
            raise ConfigError(f"'{text}' is neither a frame index (120) nor a time (4.8s, 1:02.5, 00:01:02.5)")
        parts = [p for p in match.groups() if p is not None]
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + float(part)
        return cls(seconds=seconds)

    def reached(self, index: int, seconds: float | None) -> bool:
        if self.frame is not None:
            return index >= self.frame
        return seconds is not None and seconds >= self.seconds - 1e-6


# --- colour conversion --------------------------------------------------------------------------------------

_MATRIX = {1: "ITU709", 5: "ITU601", 6: "SMPTE170M", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}


def untagged_matrix(height: int) -> str:
    """Untagged material: FFmpeg's convention, BT.601 below 720 lines and BT.709 from HD up."""
    return "ITU709" if height >= 720 else "ITU601"


def _src_colorspace(frame: av.VideoFrame) -> str:
    return _MATRIX.get(int(frame.colorspace or 2), untagged_matrix(frame.height))


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name in ("rgb24", "bgr24", "rgba", "bgra", "gbrp"):
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", src_colorspace=_src_colorspace(frame), dst_colorspace="ITU709")


class VideoReader:
    """Streams the frames of a clip's first video stream, in presentation order."""

    def __init__(self, path: str | Path, info: VideoInfo | None = None, *, on_decode_error: str = "fail"):
        self.path = Path(path)
        self.info = info or probe(self.path)
        self.on_decode_error = on_decode_error
        self.skipped_packets = 0
        self.incomplete: str | None = None  # set instead of raising when on_decode_error == "skip"
        self.frames_decoded = 0  # frames the decoder has handed over, across calls (previews count them)

    def frames(self, start: Position | None = None, end: Position | None = None) -> Iterator[Frame]:
        container = _open_input(self.path)
        try:
            stream = container.streams[self.info.video_index]
            stream.thread_type = "AUTO"
            seeking = start is not None and start.seconds is not None
            if seeking and start.seconds > 0:
                # Land on the keyframe before the start, then decode forward; never read the whole prefix.
                target = int((self.info.start_time + start.seconds) / self.info.time_base)
                container.seek(target, stream=stream, backward=True, any_frame=False)
            index, last_time, first = 0, None, True
            for frame in self._decode(container, stream):
                seconds = None if frame.time is None else frame.time - self.info.start_time
                if seeking and first and self.info.frame_rate and seconds is not None:
                    index = int(round(seconds * self.info.frame_rate))  # after a seek, from the timestamp
                first = False
                if end is not None and end.reached(index, seconds):
                    return
                last_time = frame.time
                if start is None or start.reached(index, seconds):
                    yield Frame(index=index, pts=frame.pts, time_base=frame.time_base or self.info.time_base,
                                rgb=frame_to_rgb(frame))
                index += 1
            self._check_complete(index, last_time)
        finally:
            container.close()

    def _check_complete(self, count: int, last_time: float | None) -> None:
        """A stream that ends early is damaged: never let it turn silently into a short video."""
        info, rate = self.info, self.info.fps
        problem = None
        if info.frame_count and count < info.frame_count:
            problem = f"decoded {count} of the {info.frame_count} frames its index lists"
        elif info.duration and last_time is not None:
            slack = 2.0 / rate if info.duration_is_exact else 1.0
            if last_time + 1.0 / rate < info.start_time + info.duration - slack:
                problem = (f"the video stops at {last_time - info.start_time:.2f} s of the {info.duration:.2f} s "
                           f"the file declares ({count} frames decoded)")
        if problem is None:
            return
        if self.on_decode_error == "skip":
            self.incomplete = problem
            return
        raise CorruptInputError(
            f"{self.path}: {problem}; the file is truncated or damaged. "
            "Pass --on-decode-error skip to upscale what is there", count)

    def _decode(self, container, stream) -> Iterator[av.VideoFrame]:
        decoded = 0
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                raise CorruptInputError(
                    f"{self.path}: read error after {decoded} decoded frames: {exc}", decoded
                ) from None
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                if self.on_decode_error == "skip":
                    self.skipped_packets += 1
                    continue
                raise CorruptInputError(
                    f"{self.path}: corrupt data after {decoded} decoded frames ({exc}); "
                    "pass --on-decode-error skip to continue past damaged packets",
                    decoded,
                ) from None
            for frame in frames:
                decoded += 1
                self.frames_decoded += 1
                yield frame
