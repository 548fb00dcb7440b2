"""Frames over pipes for filter mode: YUV4MPEG2 (y4m) and raw rgb24, in and out.

y4m carries no colour matrix, so frames are read and written like untagged files: BT.601 below 720 lines,
BT.709 from 720 up (FFmpeg's convention), in both directions, so a y4m round trip keeps its colours. The range
is FFmpeg's `XCOLORRANGE` extension (limited unless it says FULL), and the output keeps the input's. 8-bit and
high bit depth (`C420p10`, `C422p12`, ...: 16-bit little-endian samples) streams are read, and written back in
the same chroma subsampling and depth; deep frames travel as 16-bit RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterator

import av
import numpy as np

from vidup.errors import PipeFormatError
from vidup.video.colour import FULL, LIMITED, Colour, frame_to_rgb, pixel_format_facts, rgb_to_frame, untagged_matrix
from vidup.video.describe import SourceFormat
from vidup.video.timing import nominal_rate

MAX_HEADER = 1024
_CHROMA = {
    "420jpeg": "yuv420p",
    "420mpeg2": "yuv420p",
    "420paldv": "yuv420p",
    "420": "yuv420p",
    "444": "yuv444p",
    "422": "yuv422p",
    "mono": "gray",
    "420p10": "yuv420p10le",
    "422p10": "yuv422p10le",
    "444p10": "yuv444p10le",
    "mono10": "gray10le",
    "420p12": "yuv420p12le",
    "422p12": "yuv422p12le",
    "444p12": "yuv444p12le",
    "mono12": "gray12le",
    "420p16": "yuv420p16le",
    "422p16": "yuv422p16le",
    "444p16": "yuv444p16le",
    "mono16": "gray16le",
}
_TAG = {"yuv420p": "420jpeg", "yuv422p": "422", "yuv444p": "444", "gray": "mono"}
_TAG.update({fmt: tag for tag, fmt in _CHROMA.items() if fmt.endswith("le")})


@dataclass(frozen=True)
class StreamFormat:
    width: int
    height: int
    rate: Fraction
    pix_fmt: str = "yuv420p"
    full_range: bool = False  # XCOLORRANGE=FULL: 0-255 luma instead of 16-235

    @property
    def bytes_per_sample(self) -> int:
        return 1 if pixel_format_facts(self.pix_fmt)[0] <= 8 else 2

    @property
    def frame_bytes(self) -> int:
        w, h = self.width, self.height
        chroma = {
            "420": 2 * ((w + 1) // 2) * ((h + 1) // 2),
            "422": 2 * ((w + 1) // 2) * h,
            "444": 2 * w * h,
            "400": 0,
        }[pixel_format_facts(self.pix_fmt)[1]]
        return (w * h + chroma) * self.bytes_per_sample

    def source(self) -> SourceFormat:
        """The stream's facts for the clip's output description."""
        return SourceFormat(
            width=self.width,
            height=self.height,
            frame_rate=self.rate,
            time_base=1 / nominal_rate(self.rate),
            pix_fmt=self.pix_fmt,
            colour=Colour(range=FULL if self.full_range else LIMITED),
            interlaced=False,
            field_order="progressive",
        )


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
        raise PipeFormatError(
            f"not a y4m stream: it starts with {text[:20]!r} instead of 'YUV4MPEG2' "
            "(use --format rawvideo for raw rgb24)"
        )
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
        raise PipeFormatError(
            f"y4m colour space C{chroma} is not supported (420, 422, 444 or mono at 8, 10, 12 or 16 bits)"
        )
    if width <= 0 or height <= 0:
        raise PipeFormatError(f"y4m frame size {width}x{height} is not valid")
    colour_range = extensions.get("COLORRANGE", "LIMITED").upper()
    if colour_range not in ("FULL", "LIMITED"):
        raise PipeFormatError(f"y4m XCOLORRANGE={colour_range} is not FULL or LIMITED")
    return StreamFormat(width, height, rate, _CHROMA[chroma], full_range=colour_range == "FULL")


def _planes_to_rgb(data: bytes, fmt: StreamFormat) -> np.ndarray:
    frame = av.VideoFrame(fmt.width, fmt.height, fmt.pix_fmt)
    sample = np.dtype("<u2") if fmt.bytes_per_sample == 2 else np.dtype(np.uint8)
    offset = 0
    for plane in frame.planes:
        w, h = plane.width, plane.height
        rows = np.frombuffer(data, sample, w * h, offset).reshape(h, w)
        buffer = np.frombuffer(plane, sample).reshape(h, plane.line_size // sample.itemsize)
        buffer[:, :w] = rows
        offset += w * h * sample.itemsize
    frame.color_range = FULL if fmt.full_range else LIMITED
    rgb_format = "rgb24" if fmt.bytes_per_sample == 1 else "rgb48le"
    return frame_to_rgb(frame, rgb_format, untagged_matrix(fmt.height), fmt.full_range)


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
            raise PipeFormatError(
                f"raw frame {index} is truncated: {len(data)} of {size} bytes (is --size {width}x{height} right?)"
            )
        yield np.frombuffer(data, np.uint8).reshape(height, width, 3)
        index += 1


class Y4MWriter:
    """y4m out in `pix_fmt` (8-bit or deeper, any chroma subsampling y4m names)."""

    def __init__(
        self,
        stream: BinaryIO,
        width: int,
        height: int,
        rate: Fraction,
        full_range: bool = False,
        pix_fmt: str = "yuv420p",
    ):
        if pix_fmt not in _TAG:
            raise PipeFormatError(f"y4m cannot carry {pix_fmt}")
        self.stream = stream
        self.width, self.height, self.pix_fmt = width, height, pix_fmt
        self.full_range = full_range
        self.matrix = untagged_matrix(height)
        rate = Fraction(rate)
        extension = " XCOLORRANGE=FULL" if full_range else ""
        stream.write(
            f"YUV4MPEG2 W{width} H{height} F{rate.numerator}:{rate.denominator} Ip A1:1 C{_TAG[pix_fmt]}"
            f"{extension}\n".encode()
        )

    def write(self, rgb: np.ndarray) -> None:
        yuv = rgb_to_frame(rgb, self.pix_fmt, self.matrix, self.full_range)
        sample = np.dtype("<u2") if pixel_format_facts(self.pix_fmt)[0] > 8 else np.dtype(np.uint8)
        parts = [b"FRAME\n"]
        for plane in yuv.planes:
            buffer = np.frombuffer(plane, sample).reshape(plane.height, plane.line_size // sample.itemsize)
            parts.append(buffer[:, : plane.width].tobytes())
        self.stream.write(b"".join(parts))


class RawWriter:
    def __init__(self, stream: BinaryIO):
        self.stream = stream

    def write(self, rgb: np.ndarray) -> None:
        self.stream.write(np.ascontiguousarray(rgb).tobytes())
