"""Encode upscaled frames as the clip's `OutputDescription` says, and copy every other stream packet for packet.

- Video: the description's size, sample aspect, pixel format (bit depth and chroma), colour tags and HDR10
  metadata (x264/x265 parameters), rotation and timecode (a timecode track in MOV/MP4, a tag in Matroska).
- Audio, subtitles and data streams are copied packet for packet with their language and disposition;
  attachments (fonts for ASS subtitles) are written with the header. Damaged packets, and packets the muxer
  refuses (out-of-order timestamps), are dropped and counted, never allowed to crash the mux.
- Whether the container can hold a stream is found by trying, not from the muxer's codec list (which says
  MPEG-TS cannot hold H.264).
- Atomic output: everything goes to a hidden temporary file beside the target (named with vidup's process id)
  and is renamed into place only when complete. A temporary file left by a killed run is removed, with a note.
  Every OS or muxer error on output is an `OutputWriteError`, and no temporary file is left.
"""

from __future__ import annotations

import io
import logging
import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.error
import numpy as np

from vidup.config import CODECS, NVENC_PRESETS, OutputConfig
from vidup.fsutil import commit, os_error_text, remove_stale_temps, temp_name
from vidup.errors import OutputPathError, OutputWriteError, UnsupportedStreamError
from vidup.video.colour import rgb_to_frame
from vidup.video.describe import OutputDescription
from vidup.video.repairs import Repairs
from vidup.video.reader import StreamInfo, VideoInfo, open_input
from vidup.video.timing import NOMINAL_RATE, nominal_rate

log = logging.getLogger(__name__)

MUXER_TAGS = {"encoder", "major_brand", "minor_version", "compatible_brands"}  # the muxer's own, rewritten
FORMATS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
    ".ts": "mpegts",
    ".m2ts": "mpegts",
    ".mts": "mpegts",
    ".mxf": "mxf",
    ".nut": "nut",
}


def check_output_path(output: Path, input_path: Path | None, overwrite: bool) -> None:
    """Refuse unusable output paths before anything expensive happens."""
    if str(output) == "-":
        raise OutputPathError(
            "vidup upscale writes files; to write frames to stdout use `vidup filter` "
            "(... | vidup filter | ffmpeg -f yuv4mpegpipe -i - OUT)"
        )
    same = input_path is not None and (
        output.resolve() == input_path.resolve()
        or (output.exists() and input_path.exists() and output.samefile(input_path))
    )
    if same:  # resolve() catches "./in.mp4", samefile() hard links
        raise OutputPathError(f"output {output} is the input file; choose another name")
    if output.is_dir():
        raise OutputPathError(f"output {output} is a folder; give a file name such as {output / 'out.mp4'}")
    if output.exists() and not overwrite:
        raise OutputPathError(f"output {output} already exists; pass --overwrite to replace it")
    if not output.suffix:
        raise OutputPathError(f"output {output} has no extension; use .mp4, .mkv, .mov or .ts")
    format_for(output)
    folder = output.parent if str(output.parent) else Path(".")
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write to {folder}: permission denied")


def check_encoder(codec: str) -> None:
    """Hardware encoders exist in PyAV's FFmpeg but need their hardware: open one tiny encoder now, before any
    model loads, so a machine without it gets a clear error instead of a failure at the first frame."""
    if not codec.endswith(("_nvenc", "_qsv", "_vaapi", "_amf", "_videotoolbox")):
        return
    context = av.CodecContext.create(codec, "w")
    context.width = context.height = 256
    context.pix_fmt, context.time_base = "yuv420p", 1 / NOMINAL_RATE
    try:
        context.open()
    except (av.error.FFmpegError, OSError) as exc:
        raise UnsupportedStreamError(
            f"{codec} needs an NVIDIA GPU and its driver, and this machine has none that works "
            f"({exc.__class__.__name__}); use --codec libx264 or libx265"
        ) from None


def format_for(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise OutputPathError(
            f"unsupported output extension '{path.suffix}'; use one of {', '.join(FORMATS)}"
        ) from None


def timecode_plus(timecode: str, seconds: float, rate: Fraction | None) -> str:
    """A SMPTE timecode moved by `seconds` (a trim's start) at the clip's nominal rate. ';' marks drop-frame
    timecode (29.97 and 59.94): frame numbers 0-1 (0-3 at 59.94) are skipped each minute but every tenth."""
    match = re.fullmatch(r"(\d+):(\d+):(\d+)([:;.,])(\d+)", timecode.strip())
    if not match or not rate or not seconds:
        return timecode
    h, m, s, sep, f = (int(g) if g.isdigit() else g for g in match.groups())
    fps = round(float(rate))
    drop = fps // 15 if sep in ";," and fps in (30, 60) else 0
    minutes = h * 60 + m
    count = (minutes * 60 + s) * fps + f - drop * (minutes - minutes // 10)
    count += round(seconds * float(rate))
    if drop:  # frame count back to drop-frame labels
        per_minute, per_ten = fps * 60 - drop, fps * 600 - 9 * drop
        tens, rest = divmod(count, per_ten)
        count += 9 * drop * tens + (drop * ((rest - drop) // per_minute) if rest >= drop else 0)
    f, s = count % fps, count // fps % 60
    m, h = count // (fps * 60) % 60, count // (fps * 3600) % 24
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{f:02d}"


def add_video_stream(container, d: OutputDescription, output: OutputConfig, suffix: str, timecode: str | None = None):
    """The output video stream and its encoder, as the description says. Every encoder of a clip (the whole
    file's, each job segment's) is made here, so they all use identical settings."""
    try:
        stream = container.add_stream(output.codec, rate=nominal_rate(d.frame_rate))
    except ValueError:
        raise UnsupportedStreamError(f"{suffix} files cannot hold {output.codec} video; use .mkv or .mov") from None
    stream.width, stream.height = d.width, d.height
    stream.pix_fmt = d.pix_fmt
    _, has_crf, has_preset = CODECS[output.codec]
    options = {}
    nvenc = output.codec.endswith("_nvenc")
    if has_crf and output.crf is not None:
        options |= {"rc": "vbr", "cq": str(output.crf)} if nvenc else {"crf": str(output.crf)}
    if has_preset and output.preset:
        options["preset"] = NVENC_PRESETS.get(output.preset, output.preset) if nvenc else output.preset
    params = d.hdr.encoder_params(output.codec) if d.hdr else []
    if output.codec == "libx265":
        params.insert(0, "log-level=error")
    if params:
        options[f"{output.codec.removeprefix('lib')}-params"] = ":".join(params)
    stream.options = options
    stream.time_base = d.time_base  # the reader's clock: every pts survives exactly
    cc = stream.codec_context
    cc.time_base = d.time_base
    cc.thread_count = output.threads
    c = d.colour
    cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = c.primaries, c.transfer, c.matrix, c.range
    if d.sample_aspect != 1:
        cc.sample_aspect_ratio = d.sample_aspect
    if d.rotation:
        stream.set_display_rotation(d.rotation)
    if timecode:
        stream.metadata["timecode"] = timecode
    return stream


def output_frame(
    rgb: np.ndarray,
    d: OutputDescription,
    pts: int | None,
    time_base: Fraction | None,
    shift: float,
    stream_time_base: Fraction,
    fallback_pts: int,
) -> av.VideoFrame:
    """An upscaled frame as the encoder takes it: the output pixel format and colour tags, and the source's pts
    moved by `shift` seconds (the output's time zero) into the stream's clock."""
    frame = rgb_to_frame(rgb, d.pix_fmt, d.colour.swscale_matrix, d.colour.full_range)
    c = d.colour
    frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range = (
        c.primaries,
        c.transfer,
        c.matrix,
        c.range,
    )
    tb = time_base or stream_time_base
    if pts is not None:
        frame.pts = int(round((pts - int(round(shift / tb))) * tb / stream_time_base))
    else:
        frame.pts = fallback_pts
    frame.time_base = stream_time_base
    return frame


class VideoWriter:
    """Usage: `with VideoWriter(path, description, output, source=info) as w: w.write(rgb, pts)`; the file
    appears on a clean exit. `window` = (start, end) in seconds of the input's timeline trims the copied streams;
    its start is the output's time zero (so a trim, or a negative start, begins at 0). `timecode_offset`: seconds
    a trim skips, so the timecode track names the first frame kept."""

    def __init__(
        self,
        path: str | Path,
        description: OutputDescription,
        output: OutputConfig,
        source: VideoInfo | None = None,
        window: tuple[float | None, float | None] | None = None,
        overwrite: bool = False,
        repairs: Repairs | None = None,
        timecode_offset: float = 0.0,
    ):
        self.path = Path(path)
        self.timecode_offset = timecode_offset  # seconds from the source's first frame to the output's first
        self.description = description
        self.source = source
        self.window = window  # may be set until the first write (a frame-index start is known only then)
        self.repairs = repairs if repairs is not None else Repairs()
        self.frames_written = 0
        self.packets_copied = 0
        self.notes: list[str] = []
        self._overwrite = overwrite
        self._passthrough_in = None
        self._format = format_for(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(f"cannot create the folder {self.path.parent}: {os_error_text(exc)}") from None
        for stale in remove_stale_temps(self.path):
            self.notes.append(f"removed {stale.name}, left by an interrupted run")
        self._tmp = temp_name(self.path)
        try:
            self._container = av.open(str(self._tmp), "w", format=self._format)
        except (OSError, av.error.FFmpegError) as exc:
            raise OutputWriteError(f"cannot write {self.path}: {os_error_text(exc)}") from None
        try:
            self._video = self._add_video_stream(output)
            self._copied = self._add_passthrough_streams() if source else {}
            if source is not None:
                self._copy_tags_and_chapters(source)
            self._start()
        except BaseException:
            self.abort()
            raise
        self._pending = self._passthrough_packets() if self._copied else iter(())
        self._next_packet = None

    # --- setup ------------------------------------------------------------------------------------------------

    def _add_video_stream(self, output: OutputConfig):
        d = self.description
        timecode = timecode_plus(d.timecode, self.timecode_offset, d.source.frame_rate) if d.timecode else None
        return add_video_stream(self._container, d, output, self.path.suffix, timecode)

    def _add_passthrough_streams(self) -> dict[int, object]:
        infos = self.source.passthrough_streams
        if not infos:
            return {}
        self._passthrough_in = open_input(self.source.path)
        copied = {}
        for info in infos:
            in_stream = self._passthrough_in.streams[info.index]
            if info.type == "attachment":
                self._add_attachment(in_stream, info)
                continue
            try:
                out_stream = self._container.add_stream_from_template(in_stream)
            except (ValueError, av.error.FFmpegError):
                raise self._cannot_hold(info) from None
            for key, value in in_stream.metadata.items():
                out_stream.metadata[key] = value
            out_stream.disposition = in_stream.disposition
            copied[info.index] = out_stream
        return copied

    def _add_attachment(self, in_stream, info: StreamInfo) -> None:
        if self._format != "matroska":  # only Matroska stores attachments (MP4 accepts one, then fails its header)
            raise self._cannot_hold(info)
        name = getattr(in_stream, "name", None) or info.metadata.get("filename") or f"attachment{info.index}"
        mimetype = getattr(in_stream, "mimetype", None) or info.metadata.get("mimetype") or "application/octet-stream"
        try:
            self._container.add_attachment(name, mimetype, bytes(in_stream.data))
        except (ValueError, av.error.FFmpegError, AttributeError):
            raise self._cannot_hold(info) from None

    def _copy_tags_and_chapters(self, source: VideoInfo) -> None:
        for key, value in source.tags.items():
            if key.lower() not in MUXER_TAGS:
                self._container.metadata[key] = value
        video_in = next((s for s in source.streams if s.index == source.video_index), None)
        for key in ("language", "title"):
            if video_in is not None and video_in.metadata.get(key):
                self._video.metadata[key] = video_in.metadata[key]
        if not source.chapters:
            return
        shift = (
            self.window[0]
            if self.window and self.window[0] is not None
            else source.start_time + self.timecode_offset
            if self.timecode_offset
            else 0.0
        )
        end = self.window[1] if self.window else None
        chapters = []
        for chapter in source.chapters:
            tb = chapter["time_base"]
            first, last = float(chapter["start"] * tb) - shift, float(chapter["end"] * tb) - shift
            if end is not None:
                last = min(last, end - shift)
            if last <= 0 or last <= first:
                continue  # trimmed away
            chapters.append(dict(chapter, start=int(round(max(first, 0) / tb)), end=int(round(last / tb))))
        try:
            self._container.set_chapters(chapters)
        except (ValueError, av.error.FFmpegError):
            self.notes.append(
                f"{self.path.suffix} files cannot hold chapters; the source's {len(chapters)} are not kept"
            )

    def _cannot_hold(self, info: StreamInfo) -> UnsupportedStreamError:
        what = {"attachment": "attachment", "data": "data stream"}.get(info.type, f"{info.type} stream")
        return UnsupportedStreamError(
            f"{self.path.suffix} files cannot hold the {what} #{info.index} ({info.codec}) without re-encoding it; "
            "use an .mkv output to keep it untouched"
        )

    def _start(self) -> None:
        """Write the header. A stream the muxer refuses here is named (each is tried alone in memory)."""
        try:
            self._container.start_encoding()
        except (ValueError, av.error.FFmpegError) as exc:
            for info in self.source.passthrough_streams if self.source else ():
                if info.index in self._copied and not self._muxes_alone(info):
                    raise self._cannot_hold(info) from None
            raise UnsupportedStreamError(f"{self.path.suffix} files cannot hold this output: {exc}") from None

    def _muxes_alone(self, info: StreamInfo) -> bool:
        try:
            with av.open(io.BytesIO(), "w", format=self._format) as trial:
                trial.add_stream_from_template(self._passthrough_in.streams[info.index])
                trial.start_encoding()
            return True
        except (ValueError, av.error.FFmpegError):
            return False

    # --- packets ----------------------------------------------------------------------------------------------

    def _passthrough_packets(self) -> Iterator:
        streams = [self._passthrough_in.streams[i] for i in self._copied]
        packets = self._passthrough_in.demux(streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError:  # a damaged stretch: read on past it
                self.repairs.dropped_packets += 1
                packets = self._passthrough_in.demux(streams)
                continue
            if packet.dts is None and packet.pts is None:
                continue  # demuxer flush packets carry no data
            if packet.is_corrupt:
                self.repairs.dropped_packets += 1
                continue
            yield packet

    @staticmethod
    def _packet_time(packet) -> float:
        ts = packet.dts if packet.dts is not None else packet.pts
        return float(ts * packet.time_base)

    def _mux_passthrough(self, until: float | None) -> None:
        """Copy audio/subtitle/data packets up to `until` seconds (input timeline) so the file stays interleaved."""
        while True:
            if self._next_packet is None:
                self._next_packet = next(self._pending, None)
                if self._next_packet is None:
                    return
            packet = self._next_packet
            t = self._packet_time(packet)
            if until is not None and t > until:
                return
            self._next_packet = None
            if self.window is not None:
                start, end = self.window
                length = float((packet.duration or 0) * packet.time_base)
                if (start is not None and t + length <= start + 1e-6) or (end is not None and t >= end):
                    continue  # outside the window; a packet that overlaps its start is kept
                if start:
                    offset = int(round(start / packet.time_base))
                    if packet.pts is not None:
                        packet.pts -= offset
                    if packet.dts is not None:
                        packet.dts -= offset
            packet.stream = self._copied[packet.stream.index]
            try:
                self._container.mux(packet)
            except OSError:
                raise  # the disk, not the packet: the caller turns it into an OutputWriteError
            except (ValueError, av.error.FFmpegError):
                self.repairs.dropped_packets += 1  # refused by the muxer (timestamps out of order): never fatal
                continue
            self.packets_copied += 1

    @property
    def _shift(self) -> float:
        return (self.window[0] or 0.0) if self.window else 0.0

    @property
    def extradata(self) -> bytes | None:
        """The encoder's global header (SPS/PPS for H.264 in MP4/MKV): pre-encoded packets must match it."""
        return self._video.codec_context.extradata

    def write_encoded(self, packet: av.Packet) -> None:
        """Mux one pre-encoded video packet (a job segment's; its time base set), interleaving the copied
        streams up to its time."""
        packet.stream = self._video
        try:
            if self._copied and packet.pts is not None:
                self._mux_passthrough(float(packet.pts * packet.time_base) + self._shift)
            self._container.mux(packet)
        except OSError as exc:
            raise OutputWriteError(f"writing {self.path} failed: {os_error_text(exc)}") from None

    def write(self, rgb: np.ndarray, pts: int | None, time_base: Fraction | None = None) -> None:
        frame = output_frame(
            rgb, self.description, pts, time_base, self._shift, self._video.time_base, self.frames_written
        )
        try:
            if self._copied:
                self._mux_passthrough(float(frame.pts * self._video.time_base) + self._shift)
            self._container.mux(self._video.encode(frame))
        except OSError as exc:  # av.error.OSError included: ENOSPC, EIO, EROFS
            raise OutputWriteError(f"writing {self.path} failed: {os_error_text(exc)}") from None
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, copy the remaining packets, and move the finished file into place."""
        try:
            try:
                self._container.mux(self._video.encode(None))
                if self._copied:
                    self._mux_passthrough(None)
                self._container.close()
            except OSError as exc:
                raise OutputWriteError(f"writing {self.path} failed: {os_error_text(exc)}") from None
            if self._passthrough_in is not None:
                self._passthrough_in.close()
            if self.path.exists() and not self._overwrite:
                raise OutputPathError(f"output {self.path} appeared while vidup was running; not replacing it")
            commit(self._tmp, self.path, "file", usual_mode=True)  # outputs get the usual mode, not the temp's 0600
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; no output file is left behind."""
        for resource in (getattr(self, "_container", None), self._passthrough_in):
            if resource is not None:
                try:
                    resource.close()
                except Exception:
                    pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
