"""Streaming decode with PyAV. One `VideoReader` abstraction over the container: `probe()` for facts, and an
iterator of `Frame`s that holds at most a few decoded frames at a time, whatever the clip's length.

Between the demuxer and the engines the reader makes broadcast material safe to process, and counts what it
did (`Repairs`): damaged packets fail the run with the frame count, or are skipped and counted; frames whose
size changes mid-stream are scaled to the first frame's; non-monotonic timestamps are nudged forward; interlaced
frames are deinterlaced (bwdif); frames leave as RGB at 8 or 16 bits per channel, decoded with the stream's own
matrix and range. Frames lost to damage are counted by matching demuxed packet timestamps with decoded ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

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
from vidup.video.colour import Colour, HdrMetadata, frame_to_rgb
from vidup.video.deinterlace import Deinterlacer, detect_interlacing, field_order_name, interlaced_from_flags
from vidup.video.describe import SourceFormat
from vidup.video.repairs import Repairs
from vidup.video.timing import Position, nominal_rate

if TYPE_CHECKING:
    from vidup.video.describe import OutputDescription

TS_PACKET = 188
MAX_CONSECUTIVE_READ_ERRORS = 64  # past this many demux errors in a row, the file is not worth reading on


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
    start_time: float  # seconds, of the first video frame (negative where a clock wrapped)
    duration: float | None  # seconds, when the container knows it
    duration_is_exact: bool  # True when it is the video stream's own duration, not the whole file's
    frame_count: int | None  # when the container knows it; never required
    codec: str
    streams: tuple[StreamInfo, ...]
    video_index: int
    source: SourceFormat  # the decoded stream's facts: bit depth, chroma, colour, HDR, fields, aspect, timecode
    truncated: str | None = None  # why the file looks cut short, where the container can tell and it still decodes
    tags: dict = field(default_factory=dict, compare=False)  # container metadata (title, comment, ...)
    chapters: tuple = field(default=(), compare=False)  # as PyAV gives them: dicts with start, end, time_base

    # The decoded stream's facts live in `source`, once; these read them.
    @property
    def width(self) -> int:
        return self.source.width

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def frame_rate(self) -> Fraction | None:
        """The average rate; exact rational (30000/1001, not 29.97)."""
        return self.source.frame_rate

    @property
    def time_base(self) -> Fraction:
        return self.source.time_base

    @property
    def pix_fmt(self) -> str:
        return self.source.pix_fmt

    @property
    def fps(self) -> float:
        """The nominal frame rate for converting between times and frame indices (`timing.nominal_rate`)."""
        return float(nominal_rate(self.frame_rate))

    @property
    def rotation(self) -> int:
        return self.source.rotation

    @property
    def passthrough_streams(self) -> tuple[StreamInfo, ...]:
        """The streams copied packet for packet into the output: audio, subtitles, data (a timecode track is
        rewritten from the timecode instead) and attachments (written with the header)."""
        return tuple(
            s
            for s in self.streams
            if s.type in ("audio", "subtitle", "attachment")
            or (s.type == "data" and s.codec != "tmcd" and "TimeCode" not in s.metadata.get("handler_name", ""))
        )


@dataclass
class Frame:
    index: int  # ordinal of the output frame in the input clip (counted from its first frame)
    pts: int | None
    time_base: Fraction
    rgb: np.ndarray  # HxWx3 uint8 (8-bit sources) or uint16 (deeper ones), full range

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
    try:
        codec = stream.codec_context.codec.canonical_name if stream.codec_context else "unknown"
    except Exception:  # data streams without a known codec
        codec = "unknown"
    return StreamInfo(
        index=stream.index,
        type=stream.type,
        codec=codec,
        language=stream.language or stream.metadata.get("language"),
        disposition=_disposition_names(stream),
        metadata=dict(stream.metadata),
    )


def open_input(path: Path):
    if str(path) == "-":
        raise ConfigError(
            "vidup upscale reads files; for frames on stdin use `vidup filter` "
            "(ffmpeg -i IN -f yuv4mpegpipe - | vidup filter | ffmpeg -i - OUT)"
        )
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


def _cut_short(path: Path, format_name: str) -> str | None:
    """MPEG-TS is a run of 188-byte packets (192 in M2TS): a file that is not was cut short. Decodable up to the
    cut, so the caller decides (fail, or upscale what is there)."""
    size = path.stat().st_size
    if "mpegts" in format_name and size % TS_PACKET and size % 192:
        return f"{size} bytes is not a whole number of transport-stream packets; the file was cut short"
    return None


def _check_not_truncated(stream, path: Path) -> None:
    """MP4/MOV index every sample: one that lies past the end of the file is missing, and so is the index's
    promise."""
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


def _timecode(container, video) -> str | None:
    for holder in (video, container, *[s for s in container.streams if s.type == "data"]):
        value = holder.metadata.get("timecode")
        if value:
            return value
    return None


def _sample_aspect(stream) -> Fraction:
    for holder in (stream, stream.codec_context):
        sar = getattr(holder, "sample_aspect_ratio", None)
        if sar:
            return Fraction(sar)
    return Fraction(1)


def probe(path: str | Path) -> VideoInfo:
    """Open, check and describe a clip without decoding more than its first frame."""
    path = Path(path)
    container = open_input(path)
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
        rate = stream.average_rate or stream.guessed_rate
        time_base = stream.time_base or Fraction(1, 90000)
        order = field_order_name(getattr(cc, "field_order", 0))
        source = SourceFormat(
            width=first.width,
            height=first.height,
            frame_rate=rate,
            time_base=time_base,
            pix_fmt=first.format.name,
            sample_aspect=_sample_aspect(stream),
            colour=Colour.of(first),
            hdr=HdrMetadata.from_frame(first),
            interlaced=interlaced_from_flags(order, bool(first.interlaced_frame)),
            field_order=order,
            timecode=_timecode(container, stream),
            rotation=int(first.rotation or 0),
        )
        return VideoInfo(
            path=path,
            format=container.format.name,
            start_time=start,
            duration=duration,
            duration_is_exact=exact,
            frame_count=stream.frames or None,
            codec=cc.name,
            streams=tuple(_stream_info(s) for s in container.streams),
            video_index=stream.index,
            source=source,
            truncated=_cut_short(path, container.format.name),
            tags=dict(container.metadata),
            chapters=tuple(container.chapters()),
        )
    finally:
        container.close()


def sniff_interlacing(path: str | Path, info: VideoInfo, frames: int) -> bool:
    """For a stream whose flags do not say: does idet find fields in its first frames?"""
    container = open_input(Path(path))
    try:
        stream = container.streams[info.video_index]
        try:
            return detect_interlacing(container.decode(stream), frames)
        except av.error.FFmpegError:
            return False
    finally:
        container.close()


class VideoReader:
    """Streams the frames of a clip's first video stream, in presentation order, as `description` says (working
    bit depth, matrix and range, deinterlacing); without one, 8-bit RGB as decoded."""

    SEEK_BACK = (0.0, 1.0, 4.0, 15.0)  # seconds before a start to seek to, tried in turn until one lands before it

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo | None = None,
        *,
        on_decode_error: str = "fail",
        description: "OutputDescription | None" = None,
        max_side: int = 0,
    ):
        self.path = Path(path)
        self.max_side = max_side  # > 0: frames are scaled to at most this long side (cheap analysis passes)
        self.info = info or probe(self.path)
        self.on_decode_error = on_decode_error
        self.description = description
        self.repairs = Repairs()
        self.frames_decoded = 0  # frames the decoder has handed over, across calls (previews count them)
        self.first_time: float | None = None  # time of the first frame yielded (trims align audio to it)
        self.last_time: float | None = None
        self.interval: float | None = None  # the last gap between frames, as timestamps say (rates can lie)

    @property
    def incomplete(self) -> str | None:
        return self.repairs.incomplete

    @property
    def skipped_packets(self) -> int:
        return self.repairs.damaged_packets

    @property
    def rate(self) -> float:
        d = self.description
        return float(d.frame_rate) if d is not None and d.frame_rate else self.info.fps

    def frames(self, start: Position | None = None, end: Position | None = None) -> Iterator[Frame]:
        info, rate = self.info, self.rate
        start_seconds = None if start is None else start.seconds_at(rate)
        container, raw = self._open_at(start_seconds)
        try:
            index, stopped = None, False
            for frame in raw:
                seconds = None if frame.time is None else frame.time - info.start_time
                if index is None:  # after a seek the index comes from the timestamp
                    index = int(round(seconds * rate)) if (seconds is not None and start_seconds) else 0
                if end is not None and end.reached(index, seconds):
                    stopped = True
                    break
                if start is None or start.reached(index, seconds):
                    if self.first_time is None:
                        self.first_time = frame.time
                    if frame.time is not None and self.last_time is not None and frame.time > self.last_time:
                        self.interval = frame.time - self.last_time
                    self.last_time = frame.time
                    yield Frame(
                        index=index, pts=frame.pts, time_base=frame.time_base or info.time_base, rgb=self._to_rgb(frame)
                    )
                index += 1
            if not stopped:
                self._check_complete(index or 0)
        finally:
            container.close()

    # --- decoding ---------------------------------------------------------------------------------------------

    def _open_at(self, start_seconds: float | None):
        """Open the clip and position it so the first frame decoded is at or before `start_seconds`: seek, see
        where the decoder landed, and seek further back if it landed past the start (MPEG-TS seeks by bytes)."""
        info = self.info
        for back in self.SEEK_BACK if start_seconds else (None,):
            container = open_input(self.path)
            stream = container.streams[info.video_index]
            stream.thread_type = "AUTO"
            target = None if back is None else start_seconds - back
            if target is not None and target > 0:
                container.seek(
                    int((info.start_time + target) / info.time_base), stream=stream, backward=True, any_frame=False
                )
            frames = self._frames_from(container, stream)
            first = next(frames, None)
            landed = None if first is None or first.time is None else first.time - info.start_time
            if first is None or target is None or target <= 0 or landed is None or landed <= start_seconds + 1e-6:
                return container, _prepend(first, frames)
            container.close()  # landed past the start: go further back
        container = open_input(self.path)  # give up seeking: decode from the beginning
        stream = container.streams[info.video_index]
        stream.thread_type = "AUTO"
        return container, self._frames_from(container, stream)

    def _frames_from(self, container, stream) -> Iterator[av.VideoFrame]:
        """Decoded frames after size normalisation, deinterlacing and timestamp repair."""
        mode = self.description.deinterlace if self.description else "off"
        deinterlacer = Deinterlacer(mode, self.info.time_base) if mode != "off" else None
        last_pts = None
        for frame in self._decode(container, stream):
            frame = self._normalise_size(frame)
            for out in deinterlacer.push(frame) if deinterlacer else (frame,):
                last_pts = self._repair_pts(out, last_pts)
                yield out
        for out in deinterlacer.flush() if deinterlacer else ():
            last_pts = self._repair_pts(out, last_pts)
            yield out

    def _fail_or_count(self, counter: str, message: str, decoded: int) -> None:
        if self.on_decode_error != "skip":
            raise CorruptInputError(
                f"{self.path}: {message} after {decoded} decoded frames; pass --on-decode-error "
                "skip to continue past damaged data",
                decoded,
            )
        setattr(self.repairs, counter, getattr(self.repairs, counter) + 1)

    def _decode(self, container, stream) -> Iterator[av.VideoFrame]:
        decoded, errors_in_a_row = 0, 0
        demuxed_pts: set[int] = set()
        decoded_pts: list[int] = []
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
                errors_in_a_row = 0
            except StopIteration:
                break
            except av.error.FFmpegError as exc:
                errors_in_a_row += 1
                if self.on_decode_error != "skip" or errors_in_a_row > MAX_CONSECUTIVE_READ_ERRORS:
                    raise CorruptInputError(
                        f"{self.path}: read error after {decoded} decoded frames: {exc}", decoded
                    ) from None
                self.repairs.read_errors += 1
                packets = container.demux(stream)  # the demuxer goes on from where it stopped
                continue
            if packet.size and packet.pts is not None:
                demuxed_pts.add(packet.pts)
            if packet.is_corrupt:
                self._fail_or_count("damaged_packets", "a damaged video packet", decoded)
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:
                self._fail_or_count("damaged_packets", f"corrupt data ({exc})", decoded)
                continue
            for frame in frames:
                decoded += 1
                self.frames_decoded += 1
                if frame.pts is not None:
                    decoded_pts.append(frame.pts)
                yield frame
        self._count_lost(demuxed_pts, decoded_pts, decoded)

    def _count_lost(self, demuxed: set[int], decoded: list[int], count: int) -> None:
        """Frames lost to damage: packets whose frame never came out of the decoder, or, once damage was seen in a
        constant-rate stream, the holes it left in the timeline (a damaged stretch can swallow packets whole)."""
        if not decoded:
            return
        low, high = min(decoded), max(decoded)
        lost = len({p for p in demuxed if low <= p <= high} - set(decoded))
        damaged = lost or self.repairs.damaged_packets or self.repairs.read_errors
        if damaged and self.info.frame_rate:
            step = float(1 / (self.info.frame_rate * self.info.time_base))  # one frame, in time-base units
            gaps = np.diff(np.sort(np.asarray(decoded, np.float64)))
            holes = int(sum(round(g / step) - 1 for g in gaps if g > 1.5 * step))
            lost = max(lost, holes)
        if lost:
            if self.on_decode_error != "skip":
                raise CorruptInputError(
                    f"{self.path}: {lost} frames could not be decoded (damaged data; "
                    f"{count} frames decoded); pass --on-decode-error skip to upscale the rest",
                    count,
                )
            self.repairs.lost_frames += lost

    def _normalise_size(self, frame: av.VideoFrame) -> av.VideoFrame:
        info = self.info
        if (frame.width, frame.height) == (info.width, info.height) and frame.format.name == info.pix_fmt:
            return frame
        self.repairs.resized_frames += 1
        scaled = frame.reformat(width=info.width, height=info.height, format=info.pix_fmt)
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        return scaled

    def _repair_pts(self, frame: av.VideoFrame, last_pts: int | None) -> int | None:
        pts = frame.pts
        if pts is None:
            return last_pts
        if last_pts is not None and pts <= last_pts:
            frame.pts = pts = last_pts + 1  # the smallest step forward: never reorders, never shifts the rest
            self.repairs.repaired_timestamps += 1
        return pts

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        if self.max_side and max(frame.width, frame.height) > self.max_side:
            factor = self.max_side / max(frame.width, frame.height)
            frame = frame.reformat(
                width=max(2, round(frame.width * factor)),
                height=max(2, round(frame.height * factor)),
                interpolation="AREA",
            )
        d = self.description
        if d is None:
            return frame_to_rgb(frame)
        return frame_to_rgb(frame, d.working_format, d.decode_matrix, d.decode_full_range)

    def _check_complete(self, count: int) -> None:
        """A stream that ends early is damaged: never let it turn silently into a short video. `count`: frames
        through the end (from the first frame's index)."""
        info, rate, last_time = self.info, self.info.fps, self.last_time
        per_frame = 2 if self.description is not None and self.description.deinterlace == "field" else 1
        problem = None
        if info.frame_count and count < info.frame_count * per_frame:
            problem = f"decoded {count // per_frame} of the {info.frame_count} frames its index lists"
        elif info.duration and last_time is not None:
            frame = max(1.0 / rate, self.interval or 0.0)
            slack = 2.0 * frame if info.duration_is_exact else 1.0
            if last_time + frame < info.start_time + info.duration - slack:
                problem = (
                    f"the video stops at {last_time - info.start_time:.2f} s of the {info.duration:.2f} s "
                    f"the file declares ({count} frames decoded)"
                )
        if problem is None:
            return
        if self.on_decode_error == "skip":
            self.repairs.incomplete = problem
            return
        raise CorruptInputError(
            f"{self.path}: {problem}; the file is truncated or damaged. "
            "Pass --on-decode-error skip to upscale what is there",
            count,
        )


def _prepend(first, rest: Iterator) -> Iterator:
    if first is not None:
        yield first
    yield from rest
