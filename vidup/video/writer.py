"""Encode upscaled frames and copy every audio and subtitle stream packet-for-packet.

Atomic output: everything is written to a hidden temporary file beside the target and renamed into place only
when the file is complete, so a failure at any point leaves no output file at all.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import av.error
import numpy as np

from vidup.config import CODECS, OutputConfig
from vidup.errors import OutputPathError, UnsupportedStreamError
from vidup.video.reader import VideoInfo, _open_input

BT709 = 1
MPEG_RANGE = 1


def check_output_path(output: Path, input_path: Path | None, overwrite: bool) -> None:
    """Refuse unusable output paths before anything expensive happens."""
    same = input_path is not None and (output.resolve() == input_path.resolve()
                                       or (output.exists() and input_path.exists() and output.samefile(input_path)))
    if same:  # resolve() catches "./in.mp4", samefile() hard links
        raise OutputPathError(f"output {output} is the input file; choose another name")
    if output.is_dir():
        raise OutputPathError(f"output {output} is a folder; give a file name such as {output / 'out.mp4'}")
    if output.exists() and not overwrite:
        raise OutputPathError(f"output {output} already exists; pass --overwrite to replace it")
    if not output.suffix:
        raise OutputPathError(f"output {output} has no extension; use .mp4, .mkv or .mov")


class VideoWriter:
    """Usage: `with VideoWriter(...) as w: w.write(rgb, pts, time_base)`; the file appears on a clean exit.

    `source` (a probed input) supplies the streams to copy, colour tags and rotation; `window` = (start, end)
    in seconds of the input's timeline, either None for open, trims copied packets, and a start shifts every
    timestamp so the output begins at the window's start.
    """

    def __init__(self, path: str | Path, *, width: int, height: int, frame_rate: Fraction | None,
                 time_base: Fraction, output: OutputConfig, source: VideoInfo | None = None,
                 window: tuple[float | None, float | None] | None = None, overwrite: bool = False):
        self.path = Path(path)
        self.source = source
        self.window = window  # may be set until the first write (a frame-index start is known only then)
        self.frames_written = 0
        self.packets_copied = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".part{self.path.suffix}", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._overwrite = overwrite
        self._passthrough_in = None
        try:
            self._container = av.open(str(self._tmp), "w", format=self._format_for(self.path))
            self._video = self._add_video_stream(width, height, frame_rate, time_base, output)
            self._copied = self._add_passthrough_streams() if source else {}
            self._container.start_encoding()
        except Exception:
            self.abort()
            raise
        self._pending = self._passthrough_packets() if self._copied else iter(())
        self._next_packet = None

    @staticmethod
    def _format_for(path: Path) -> str:
        # The temporary name ends in ".part.mp4"; the muxer is chosen from the real target's extension.
        formats = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
                   ".avi": "avi", ".ts": "mpegts", ".nut": "nut"}
        try:
            return formats[path.suffix.lower()]
        except KeyError:
            raise OutputPathError(f"unsupported output extension '{path.suffix}'; use one of {', '.join(formats)}") from None

    def _add_video_stream(self, width, height, frame_rate, time_base, output: OutputConfig):
        family = av.Codec(output.codec, "w").canonical_name  # what muxers list: libx264 -> h264
        if family not in self._container.supported_codecs:
            raise UnsupportedStreamError(
                f"{self.path.suffix} files cannot hold {output.codec} video; use .mkv or .mov"
            )
        stream = self._container.add_stream(output.codec, rate=frame_rate or Fraction(25))
        stream.width, stream.height = width, height
        default_pix_fmt, has_crf, has_preset = CODECS[output.codec]
        stream.pix_fmt = output.pix_fmt or default_pix_fmt
        options = {}
        if has_crf and output.crf is not None:
            options["crf"] = str(output.crf)
        if has_preset and output.preset:
            options["preset"] = output.preset
        if output.codec == "libx265":
            options["x265-params"] = "log-level=error"
        stream.options = options
        stream.time_base = time_base  # keep the input's clock so every pts survives exactly
        stream.codec_context.time_base = time_base
        cc = stream.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = BT709, BT709, BT709, MPEG_RANGE
        if self.source is not None and self.source.rotation:
            stream.set_display_rotation(self.source.rotation)
        return stream

    def _add_passthrough_streams(self) -> dict[int, object]:
        infos = self.source.passthrough_streams
        if not infos:
            return {}
        self._passthrough_in = _open_input(self.source.path)
        copied = {}
        for info in infos:
            in_stream = self._passthrough_in.streams[info.index]
            if info.codec not in self._container.supported_codecs:
                raise UnsupportedStreamError(
                    f"{self.path.suffix} files cannot hold the {info.type} stream #{info.index} ({info.codec}) "
                    "without re-encoding it; use an .mkv output to keep it untouched"
                )
            out_stream = self._container.add_stream_from_template(in_stream)
            for key, value in in_stream.metadata.items():
                out_stream.metadata[key] = value
            out_stream.disposition = in_stream.disposition
            copied[info.index] = out_stream
        return copied

    def _passthrough_packets(self) -> Iterator:
        streams = [self._passthrough_in.streams[i] for i in self._copied]
        for packet in self._passthrough_in.demux(streams):
            if packet.dts is None and packet.pts is None:
                continue  # demuxer flush packets carry no data
            yield packet

    @staticmethod
    def _packet_time(packet) -> float:
        ts = packet.dts if packet.dts is not None else packet.pts
        return float(ts * packet.time_base)

    def _mux_passthrough(self, until: float | None) -> None:
        """Copy audio/subtitle packets up to `until` seconds (input timeline) so the file stays interleaved."""
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
            self._container.mux(packet)
            self.packets_copied += 1

    @property
    def _shift(self) -> float:
        return (self.window[0] or 0.0) if self.window else 0.0

    def write(self, rgb: np.ndarray, pts: int | None, time_base: Fraction) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format=self._video.pix_fmt, src_colorspace="ITU709", dst_colorspace="ITU709")
        frame.colorspace, frame.color_range = BT709, MPEG_RANGE
        if pts is not None:
            shift = int(round(self._shift / time_base))
            frame.pts = int(round((pts - shift) * time_base / self._video.time_base))
        else:
            frame.pts = self.frames_written
        frame.time_base = self._video.time_base
        if self._copied:
            self._mux_passthrough(float(frame.pts * self._video.time_base) + self._shift)
        self._container.mux(self._video.encode(frame))
        self.frames_written += 1

    def close(self) -> Path:
        """Flush the encoder, copy the remaining packets, and move the finished file into place."""
        try:
            self._container.mux(self._video.encode(None))
            if self._copied:
                self._mux_passthrough(None)
            self._container.close()
            if self._passthrough_in is not None:
                self._passthrough_in.close()
            if self.path.exists() and not self._overwrite:
                raise OutputPathError(f"output {self.path} appeared while vidup was running; not replacing it")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual mode
            os.replace(self._tmp, self.path)
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
