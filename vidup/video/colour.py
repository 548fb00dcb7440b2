"""Colour facts of a video stream and the conversions between its frames and RGB arrays.

- `Colour`: the four tags (primaries, transfer, matrix, range) as FFmpeg numbers them (AVCOL_*).
- `HdrMetadata`: mastering display colour volume and content light level (HDR10 side data), read from a
  decoded frame and written back as x264/x265 parameters.
- `pixel_format_facts`: bit depth and chroma subsampling of a pixel format.
- `frame_to_rgb` / `rgb_to_frame`: YUV <-> RGB through swscale at 8 bits (uint8) or 16 bits (uint16), with the
  stream's own matrix and range. RGB arrays are always full range. swscale's 10-bit round trip is exact.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import av
import numpy as np

UNSPECIFIED = 2
BT709, BT470BG, SMPTE170M, SMPTE240M, BT2020, BT2020_CL = 1, 5, 6, 7, 9, 10
TRC_PQ, TRC_HLG = 16, 18
LIMITED, FULL = 1, 2

_SWSCALE_MATRIX = {
    BT709: "ITU709",
    4: "FCC",
    BT470BG: "ITU601",
    SMPTE170M: "SMPTE170M",
    SMPTE240M: "SMPTE240M",
    BT2020: "BT2020",
    BT2020_CL: "BT2020",
}
PRIMARIES = {
    1: "bt709",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
TRANSFERS = {
    1: "bt709",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    13: "srgb",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    18: "arib-std-b67",
}
MATRICES = {0: "gbr", 1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}


def _known(value: int | None) -> bool:
    return value not in (None, 0, UNSPECIFIED)


@dataclass(frozen=True)
class Colour:
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED
    matrix: int = UNSPECIFIED
    range: int = 0  # 0 unspecified, 1 limited (MPEG), 2 full (JPEG)

    @classmethod
    def of(cls, frame_or_context) -> "Colour":
        f = frame_or_context
        return cls(
            int(f.color_primaries or UNSPECIFIED),
            int(f.color_trc or UNSPECIFIED),
            int(f.colorspace or UNSPECIFIED),
            int(f.color_range or 0),
        )

    @property
    def tagged(self) -> bool:
        return any(_known(v) for v in (self.primaries, self.transfer, self.matrix))

    @property
    def hdr(self) -> str | None:
        return {TRC_PQ: "pq", TRC_HLG: "hlg"}.get(self.transfer)

    @property
    def full_range(self) -> bool:
        return self.range == FULL

    def decode_matrix(self, height: int) -> str:
        """The swscale matrix to decode with; untagged material follows FFmpeg's convention (BT.601 below 720
        lines, BT.709 from 720 up)."""
        if _known(self.matrix) and self.matrix in _SWSCALE_MATRIX:
            return _SWSCALE_MATRIX[self.matrix]
        return untagged_matrix(height)

    @property
    def swscale_matrix(self) -> str:
        return _SWSCALE_MATRIX.get(self.matrix, "ITU709")

    def describe(self) -> str:
        return (
            f"{PRIMARIES.get(self.primaries, self.primaries)}/{TRANSFERS.get(self.transfer, self.transfer)}/"
            f"{MATRICES.get(self.matrix, self.matrix)}, {'full' if self.full_range else 'limited'} range"
        )


def untagged_matrix(height: int) -> str:
    return "ITU709" if height >= 720 else "ITU601"


def output_colour(source: Colour) -> Colour:
    """What an output carries: every tag the source has, kept; untagged fields made explicit as BT.709 (BT.2020
    primaries where the matrix is BT.2020), so players need not guess from the new frame height."""
    matrix = source.matrix if _known(source.matrix) else BT709
    primaries = source.primaries if _known(source.primaries) else (BT2020 if matrix in (BT2020, BT2020_CL) else BT709)
    transfer = source.transfer if _known(source.transfer) else BT709
    return Colour(primaries, transfer, matrix, FULL if source.range == FULL else LIMITED)


SDR_BT709 = Colour(BT709, BT709, BT709, LIMITED)


@dataclass(frozen=True)
class HdrMetadata:
    """HDR10 static metadata. Chromaticities in units of 1/50000, luminance in 1/10000 cd/m2 (as x265 takes
    them); content light level in cd/m2."""

    primaries: tuple[int, int, int, int, int, int] | None = None  # R x, y, G x, y, B x, y
    white_point: tuple[int, int] | None = None
    max_luminance: int | None = None
    min_luminance: int | None = None
    max_cll: int | None = None
    max_fall: int | None = None

    @classmethod
    def from_frame(cls, frame) -> "HdrMetadata | None":
        values: dict = {}
        for data in getattr(frame, "side_data", ()):
            kind = str(data.type)
            raw = bytes(data)
            if "MASTERING_DISPLAY" in kind and len(raw) >= 88:
                n = struct.unpack("<20i2i", raw[:88])
                ratio = lambda i, unit: round(n[i] / n[i + 1] * unit) if n[i + 1] else 0  # noqa: E731
                if n[20]:
                    values["primaries"] = tuple(ratio(i, 50000) for i in range(0, 12, 2))
                    values["white_point"] = (ratio(12, 50000), ratio(14, 50000))
                if n[21]:
                    values["min_luminance"], values["max_luminance"] = ratio(16, 10000), ratio(18, 10000)
            elif "CONTENT_LIGHT_LEVEL" in kind and len(raw) >= 8:
                values["max_cll"], values["max_fall"] = struct.unpack("<2I", raw[:8])
        return cls(**values) if values else None

    @property
    def display(self) -> str | None:
        """The mastering display as x264/x265 write it: G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)."""
        if not (self.primaries and self.white_point and self.max_luminance is not None):
            return None
        rx, ry, gx, gy, bx, by = self.primaries
        wx, wy = self.white_point
        return f"G({gx},{gy})B({bx},{by})R({rx},{ry})WP({wx},{wy})L({self.max_luminance},{self.min_luminance or 0})"

    def encoder_params(self, codec: str) -> list[str]:
        """`key=value` items for `x264-params` / `x265-params`; empty for encoders that cannot carry them."""
        keys = {"libx265": ("master-display", "max-cll"), "libx264": ("mastering-display", "cll")}.get(codec)
        if keys is None:
            return []
        items = [f"{keys[0]}={self.display}"] if self.display else []
        if self.max_cll is not None:
            items.append(f"{keys[1]}={self.max_cll},{self.max_fall or 0}")
        return items


@lru_cache(maxsize=64)
def pixel_format_facts(name: str) -> tuple[int, str]:
    """(bit depth, chroma subsampling "420" | "422" | "444" | "400") of a pixel format."""
    fmt = av.VideoFormat(name, 16, 16)
    depth = max(c.bits for c in fmt.components)
    if fmt.is_rgb:
        return depth, "444"
    chroma = [c for c in fmt.components if not c.is_luma and not c.is_alpha]
    if not chroma:
        return depth, "400"
    w, h = chroma[0].width, chroma[0].height
    return depth, {(8, 8): "420", (8, 16): "422", (16, 16): "444"}.get((w, h), "420")


def working_format(bit_depth: int) -> str:
    """The RGB layout frames travel in: 8-bit sources stay 8 bits, deeper ones go to 16 bits."""
    return "rgb24" if bit_depth <= 8 else "rgb48le"


def frame_to_rgb(
    frame: av.VideoFrame, rgb_format: str = "rgb24", matrix: str | None = None, full_range: bool | None = None
) -> np.ndarray:
    """An HxWx3 RGB array (uint8 or uint16, full range) of a decoded frame, with the given source matrix and
    range (default: the frame's own tags, and FFmpeg's convention for untagged frames)."""
    if frame.format.name in ("rgb24", "bgr24", "rgba", "bgra", "gbrp", "rgb48le", "gbrp10le", "gbrp12le", "gbrp16le"):
        return frame.to_ndarray(format=rgb_format)
    if matrix is None:
        matrix = Colour.of(frame).decode_matrix(frame.height)
    src_range = None if full_range is None else ("JPEG" if full_range else "MPEG")
    return frame.to_ndarray(format=rgb_format, src_colorspace=matrix, dst_colorspace=matrix, src_color_range=src_range)


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, matrix: str, full_range: bool) -> av.VideoFrame:
    """A frame in `pix_fmt` from an RGB array (uint8 -> rgb24, uint16 -> rgb48le)."""
    rgb_format = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=rgb_format)
    return frame.reformat(
        format=pix_fmt, src_colorspace=matrix, dst_colorspace=matrix, dst_color_range="JPEG" if full_range else "MPEG"
    )
