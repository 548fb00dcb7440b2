"""Frames over pipes for filter mode: YUV4MPEG2 (y4m) and raw rgb24, in and out.

y4m carries no colour matrix, so frames are read and written like untagged files: BT.601 below 720 lines,
BT.709 from 720 up (FFmpeg's convention), in both directions, so a y4m round trip keeps its colours. The range
is FFmpeg's `XCOLORRANGE` extension (limited unless it says FULL), and the output keeps the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterator

import av
import numpy as np

from vidup.errors import PipeFormatError
from vidup.video.reader import frame_to_rgb, untagged_matrix

MAX_HEADER = 1024
_RANGE = {False: 1, True: 2}  # AVCOL_RANGE_MPEG (limited), AVCOL_RANGE_JPEG (full)
_CHROMA = {"420jpeg": "yuv420p", "420mpeg2": "yuv420p", "420paldv": "yuv420p", "420": "yuv420p",
           "444": "yuv444p", "422": "yuv422p", "mono": "gray"}


@dataclass(frozen=True)
class StreamFormat:
    width: int
    height: int
    rate: Fraction
    pix_fmt: str = "yuv420p"
    full_range: bool = False  # XCOLORRANGE=FULL: 0-255 luma instead of 16-235

    @property
    def frame_bytes(self) -> int:
        w, h = self.width, self.height
        chroma = {"yuv420p": 2 * ((w + 1) // 2) * ((h + 1) // 2), "yuv422p": 2 * ((w + 1) // 2) * h,
                  "yuv444p": 2 * w * h, "gray": 0, "rgb24": 2 * w * h}[self.pix_fmt]
        return w * h + chroma


def _read_line(stream: BinaryIO, what: str) -> bytes | None:
    line = bytearray()
    while len(line) < MAX_HEADER:
        byte = stream.read(1)
        if not byte:
            if line:
                raise PipeFormatError(f"the input ended inside a {what} line")
            return None
        if byte == b"\n":
            return bytes(line)
        line += byte
    raise PipeFormatError(f"{what} line longer than {MAX_HEADER} bytes: this is not a y4m stream")


def parse_y4m_header(line: bytes) -> StreamFormat:
    text = line.decode("ascii", errors="replace")
    if not text.startswith("YUV4MPEG2"):
        raise PipeFormatError(f"not a y4m stream: it starts with {text[:20]!r} instead of 'YUV4MPEG2' "
                              "(use --format rawvideo for raw rgb24)")
    tokens = text.split()[1:]
    fields = {token[0]: token[1:] for token in tokens if token[0] != "X"}
    extensions = dict(token[1:].partition("=")[::2] for token in tokens if token[0] == "X")
    try:
        width, height = int(fields["W"]), int(fields["H"])
        num, den = (int(v) for v in fields.get("F", "25:1").split(":"))
        rate = Fraction(num, den)
    except (KeyError, ValueError, ZeroDivisionError):
        raise PipeFormatError(f"malformed y4m header (needs W, H and F num:den): {text!r}") from None
    chroma = fields.get("C", "420jpeg")
    if chroma not in _CHROMA:
        raise PipeFormatError(f"y4m colour space C{chroma} is not supported (8-bit 420, 422, 444 or mono only)")
    if width <= 0 or height <= 0:
        raise PipeFormatError(f"y4m frame size {width}x{height} is not valid")
    colour_range = extensions.get("COLORRANGE", "LIMITED").upper()
    if colour_range not in ("FULL", "LIMITED"):
        raise PipeFormatError(f"y4m XCOLORRANGE={colour_range} is not FULL or LIMITED")
    return StreamFormat(width, height, rate, _CHROMA[chroma], full_range=colour_range == "FULL")


def _planes_to_rgb(data: bytes, fmt: StreamFormat) -> np.ndarray:
    frame = av.VideoFrame(fmt.width, fmt.height, fmt.pix_fmt)
    offset = 0
    for plane in frame.planes:
        w, h = plane.width, plane.height
        rows = np.frombuffer(data, np.uint8, w * h, offset).reshape(h, w)
        buffer = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)
        buffer[:, :w] = rows
        offset += w * h
    frame.color_range = _RANGE[fmt.full_range]
    return frame_to_rgb(frame)


def read_y4m(stream: BinaryIO) -> tuple[StreamFormat, Iterator[np.ndarray]]:
    header = _read_line(stream, "y4m header")
    if header is None:
        raise PipeFormatError("no input on stdin: expected a y4m stream")
    fmt = parse_y4m_header(header)

    def frames() -> Iterator[np.ndarray]:
        index = 0
        while True:
            line = _read_line(stream, "FRAME")
            if line is None:
                return
            if not line.startswith(b"FRAME"):
                raise PipeFormatError(f"frame {index}: expected 'FRAME', found {line[:16]!r}")
            data = stream.read(fmt.frame_bytes)
            if len(data) != fmt.frame_bytes:
                raise PipeFormatError(f"frame {index} is truncated: {len(data)} of {fmt.frame_bytes} bytes")
            yield _planes_to_rgb(data, fmt)
            index += 1

    return fmt, frames()


def read_raw_rgb(stream: BinaryIO, width: int, height: int) -> Iterator[np.ndarray]:
    size = width * height * 3
    index = 0
    while True:
        data = stream.read(size)
        if not data:
            return
        if len(data) != size:
            raise PipeFormatError(f"raw frame {index} is truncated: {len(data)} of {size} bytes "
                                  f"(is --size {width}x{height} right?)")
        yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        index += 1


class Y4MWriter:
    def __init__(self, stream: BinaryIO, width: int, height: int, rate: Fraction, full_range: bool = False):
        self.stream = stream
        self.width, self.height = width, height
        self.full_range = full_range
        rate = Fraction(rate)
        extension = " XCOLORRANGE=FULL" if full_range else ""
        stream.write(f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C420jpeg{extension}\n"
                     .encode())

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        matrix = untagged_matrix(self.height)
        yuv = frame.reformat(format="yuv420p", src_colorspace=matrix, dst_colorspace=matrix,
                             dst_color_range=_RANGE[self.full_range])
        parts = [b"FRAME\n"]
        for plane in yuv.planes:
            buffer = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
            parts.append(buffer[:, : plane.width].tobytes())
        self.stream.write(b"".join(parts))


class RawWriter:
    def __init__(self, stream: BinaryIO):
        self.stream = stream

    def write(self, rgb: np.ndarray) -> None:
        self.stream.write(np.ascontiguousarray(rgb).tobytes())
