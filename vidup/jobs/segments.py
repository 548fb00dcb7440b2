"""A segment file: the encoded video packets of a run of frames, exactly as the encoder produced them, so the
final file is their concatenation with no re-encoding.

The file is a flat list of records, written as the encoder produces packets and closed by a trailer (the
encoder's global header, the packet count and the time base); a file without its trailer is incomplete. The
format is vidup's own: packets and their timestamps go in and come out bit for bit, free of any container's
timestamp rules (Matroska's millisecond clock, MP4's edit lists).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from vidup.config import OutputConfig
from vidup.errors import JobError, OutputWriteError
from vidup.video.describe import OutputDescription
from vidup.fsutil import commit, os_error_text, sync_and_close, temp_name, write_atomically
from vidup.video.writer import add_video_stream, format_for, output_frame

MAGIC = b"VIDUPSEG1\n"
_RECORD = struct.Struct(">cQ")  # kind, payload length
_PACKET = struct.Struct(">qqqB")  # pts, dts, duration, keyframe
_NONE = -(2**63)  # a missing timestamp


@dataclass
class EncodedPacket:
    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    keyframe: bool

    def to_av(self, time_base: Fraction) -> av.Packet:
        packet = av.Packet(self.data)
        packet.pts, packet.dts, packet.duration = self.pts, self.dts, self.duration
        packet.time_base = time_base
        packet.is_keyframe = self.keyframe
        return packet


@dataclass
class SegmentFile:
    path: Path
    time_base: Fraction
    extradata: bytes | None
    frames: int
    packets: int
    sha256: str | None = None  # known when the file was just written or received

    def read(self) -> Iterator[EncodedPacket]:
        with open(self.path, "rb") as f:
            f.seek(len(MAGIC))
            while True:
                head = f.read(_RECORD.size)
                kind, length = _RECORD.unpack(head)
                if kind == b"T":
                    return
                payload = f.read(length)
                pts, dts, duration, key = _PACKET.unpack_from(payload)
                yield EncodedPacket(
                    payload[_PACKET.size :],
                    None if pts == _NONE else pts,
                    None if dts == _NONE else dts,
                    duration,
                    bool(key),
                )

    @classmethod
    def open(cls, path: Path) -> "SegmentFile":
        """A finished segment file (its trailer read); JobError if it is not one."""
        try:
            with open(path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise JobError(f"{path} is not a vidup segment file")
                f.seek(-8, os.SEEK_END)
                (length,) = struct.unpack(">Q", f.read(8))
                f.seek(-8 - length, os.SEEK_END)
                trailer = json.loads(f.read(length))
        except (OSError, ValueError, struct.error) as exc:
            raise JobError(f"{path} is not a complete segment file ({exc})") from None
        return cls(
            path,
            Fraction(trailer["time_base"]),
            bytes.fromhex(trailer["extradata"]) if trailer["extradata"] else None,
            trailer["frames"],
            trailer["packets"],
        )


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SegmentEncoder:
    """Encodes a segment's frames with the clip's encoder settings (the output container's flags included, so
    H.264 for MP4 carries its headers globally) into `path`, via a hidden temporary file renamed into place when
    the segment is complete. Frames keep their source pts, moved by `shift` seconds as the whole file's are."""

    def __init__(
        self,
        path: Path,
        description: OutputDescription,
        output: OutputConfig,
        suffix: str,
        shift: float,
        first_index: int,
    ):
        self.path = path
        self.description = description
        self.shift = shift
        self.frames = 0
        self.packets = 0
        self._first_index = first_index
        # The output container only sets the encoder's flags; nothing is muxed into it.
        self._container = av.open(io.BytesIO(), "w", format=format_for(Path("x" + suffix)))
        self._stream = add_video_stream(self._container, description, output, suffix)
        self._tmp = temp_name(path)
        self._digest = hashlib.sha256()  # of every byte written, so the manifest needs no second read
        try:
            self._file = open(self._tmp, "wb")
        except OSError as exc:
            self._container.close()
            raise OutputWriteError(f"cannot write the segment {path}: {os_error_text(exc)}") from None
        try:
            self._write(MAGIC)
        except BaseException:
            self.abort()
            raise

    def _write(self, data: bytes) -> None:
        self._digest.update(data)
        try:
            self._file.write(data)
        except OSError as exc:
            raise OutputWriteError(f"writing the segment {self.path} failed: {os_error_text(exc)}") from None

    def _store(self, packets) -> None:
        for packet in packets:
            header = _PACKET.pack(
                _NONE if packet.pts is None else packet.pts,
                _NONE if packet.dts is None else packet.dts,
                packet.duration or 0,
                int(packet.is_keyframe),
            )
            data = bytes(packet)
            self._write(_RECORD.pack(b"P", len(header) + len(data)) + header + data)
            self.packets += 1

    def encode(self, rgb: np.ndarray, pts: int | None, time_base: Fraction | None) -> None:
        tb = self._stream.codec_context.time_base
        frame = output_frame(rgb, self.description, pts, time_base, self.shift, tb, self._first_index + self.frames)
        self._store(self._stream.encode(frame))
        self.frames += 1

    def finish(self) -> SegmentFile:
        """Flush the encoder, write the trailer, and move the file into place (synced first, so a crash cannot
        leave a finished-looking segment with missing data)."""
        try:
            self._store(self._stream.encode(None))
            cc = self._stream.codec_context
            trailer = json.dumps(
                {
                    "time_base": str(cc.time_base),
                    "frames": self.frames,
                    "packets": self.packets,
                    "extradata": (cc.extradata or b"").hex(),
                }
            ).encode()
            self._write(_RECORD.pack(b"T", len(trailer)) + trailer + struct.pack(">Q", len(trailer)))
            try:
                sync_and_close(self._file)
            except OSError as exc:
                raise OutputWriteError(f"writing the segment {self.path} failed: {os_error_text(exc)}") from None
            commit(self._tmp, self.path, "segment")
        except BaseException:
            self.abort()
            raise
        self._container.close()
        return SegmentFile(
            self.path, Fraction(cc.time_base), cc.extradata or None, self.frames, self.packets, self._digest.hexdigest()
        )

    def abort(self) -> None:
        for resource in (self._file, self._container):
            try:
                resource.close()
            except Exception:
                pass
        self._tmp.unlink(missing_ok=True)


def store_segment(path: Path, data: bytes) -> SegmentFile:
    """A finished segment file received from a worker, written atomically."""
    write_atomically(path, data, "the segment")
    return replace(SegmentFile.open(path), sha256=hashlib.sha256(data).hexdigest())
