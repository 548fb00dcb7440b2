"""What a clip is, and what its output will be: decided once, here, and handed to every stage.

`SourceFormat` gathers the facts of the input's video stream (the probe, or a y4m header). `describe_output`
turns them and the config into one `OutputDescription`: size, sample aspect, frame rate, bit depth, chroma
subsampling, colour tags, HDR side data, deinterlacing, timecode. The reader decodes by it, the `Upscaler`
upscales to it, the file and pipe writers encode it; none of them re-derives any of it. Every place where the
output cannot carry what the source has becomes a note the user sees.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING

import av

from vidup.errors import ConfigError
from vidup.video.colour import SDR_BT709, Colour, HdrMetadata, output_colour, pixel_format_facts, working_format

if TYPE_CHECKING:
    from vidup.config import VidupConfig

CHROMA_ORDER = ("420", "422", "444")


@dataclass(frozen=True)
class SourceFormat:
    """The input video stream's facts, as decoded (not as any container guesses)."""

    width: int
    height: int
    frame_rate: Fraction | None
    time_base: Fraction
    pix_fmt: str = "yuv420p"
    sample_aspect: Fraction = Fraction(1)
    colour: Colour = Colour()
    hdr: HdrMetadata | None = None
    interlaced: bool | None = None  # None: the stream does not say
    field_order: str = "unknown"  # progressive | tff | bff | unknown
    timecode: str | None = None
    rotation: int = 0

    @property
    def bit_depth(self) -> int:
        return pixel_format_facts(self.pix_fmt)[0]

    @property
    def chroma(self) -> str:
        return pixel_format_facts(self.pix_fmt)[1]

    @property
    def display_width(self) -> int:
        return max(1, round(self.width * self.sample_aspect))


@dataclass(frozen=True)
class OutputDescription:
    width: int  # the output's coded size (even sides)
    height: int
    sample_aspect: Fraction  # 1 for square pixels
    frame_rate: Fraction | None  # nominal rate (doubled by field-rate deinterlacing)
    time_base: Fraction  # of the frames the reader yields and the writer stores
    bit_depth: int
    chroma: str
    pix_fmt: str  # what the encoder (or the y4m stream) receives
    colour: Colour  # what the output is tagged with, and the matrix and range it is encoded in
    hdr: HdrMetadata | None
    deinterlace: str  # off | frame | field: what the reader does
    timecode: str | None
    rotation: int
    source: SourceFormat
    tonemap: bool = False  # HDR converted to BT.709 SDR
    notes: tuple[str, ...] = field(default=(), compare=False)  # what the user should know, said once

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def working_format(self) -> str:
        """rgb24 (8-bit sources) or rgb48le: the RGB layout frames travel in between reader and writer."""
        return working_format(self.working_depth)

    @property
    def working_depth(self) -> int:
        return 8 if self.source.bit_depth <= 8 and self.bit_depth <= 8 else 16

    @property
    def decode_matrix(self) -> str:
        return self.source.colour.decode_matrix(self.source.height)

    @property
    def decode_full_range(self) -> bool:
        return self.source.colour.full_range


def choose_pix_fmt(codec: str | None, depth: int, chroma: str, requested: str | None) -> tuple[str, list[str]]:
    """The pixel format for an output of `depth` bits and `chroma`, among what `codec` takes (None: any), and the
    notes on anything lost. An explicit request wins, with a note where it drops depth or chroma."""
    notes = []
    chroma = "420" if chroma == "400" else chroma
    if requested:
        got_depth, got_chroma = pixel_format_facts(requested)
        if got_depth < depth:
            notes.append(f"--pix-fmt {requested} stores {got_depth} bits; the source has {depth}")
        if CHROMA_ORDER.index(got_chroma if got_chroma in CHROMA_ORDER else "420") < CHROMA_ORDER.index(chroma):
            notes.append(f"--pix-fmt {requested} subsamples chroma to {got_chroma}; the source is {chroma}")
        return requested, notes
    supported = set(f.name for f in av.Codec(codec, "w").video_formats) if codec else None

    semi_planar = {
        (10, "420"): "p010le",
        (12, "420"): "p016le",
        (16, "420"): "p016le",
        (10, "422"): "p210le",
        (10, "444"): "yuv444p16le",
        (12, "444"): "yuv444p16le",
    }  # NVENC's deep layouts

    def name(d: int, c: str) -> str:
        planar = f"yuv{c}p" if d == 8 else f"yuv{c}p{d}le"
        if supported is not None and planar not in supported and (d, c) in semi_planar:
            return semi_planar[(d, c)]
        return planar

    candidates = [(d, c) for d in (8, 10, 12, 16) if d >= depth for c in CHROMA_ORDER[CHROMA_ORDER.index(chroma) :]]
    candidates += [(d, c) for d in (12, 10, 8) if d < depth for c in CHROMA_ORDER[CHROMA_ORDER.index(chroma) :]]
    candidates += [(d, c) for d in (16, 12, 10, 8) for c in reversed(CHROMA_ORDER[: CHROMA_ORDER.index(chroma)])]
    for d, c in candidates:
        if supported is None or name(d, c) in supported:
            if d < depth:
                notes.append(f"{codec} stores at most {d} bits; the source has {depth}")
            if c != chroma and CHROMA_ORDER.index(c) < CHROMA_ORDER.index(chroma):
                notes.append(f"{codec} cannot store {chroma} chroma; it is subsampled to {c}")
            return name(d, c), notes
    raise ConfigError(f"{codec} takes none of the YUV pixel formats vidup writes")


def output_size(source: SourceFormat, config: "VidupConfig") -> tuple[tuple[int, int], Fraction]:
    """Target coded size and sample aspect. Square pixels (default): the size is chosen for the display aspect
    (an anamorphic 720x576 at SAR 16:11 is 16:9, so 1024x576). keep: the storage aspect is scaled and the SAR
    carried."""
    spec = config.size_spec
    if config.output.pixel_aspect == "square" or source.sample_aspect == 1:
        return spec.resolve(source.display_width, source.height), Fraction(1)
    return spec.resolve(source.width, source.height), source.sample_aspect


def describe_output(
    source: SourceFormat, config: "VidupConfig", codec: str | None = None, deinterlace: str | None = None
) -> OutputDescription:
    """One output description for a clip. `codec` None: any pixel format (pipes). `deinterlace`: what was
    decided for this source (see `vidup.video.deinterlace.decide`), default: none."""
    notes: list[str] = []
    size, sar = output_size(source, config)
    if source.sample_aspect != 1:
        kept = "carried" if sar != 1 else f"made square ({size[0]}x{size[1]} shows the display aspect)"
        notes.append(
            f"anamorphic source (SAR {source.sample_aspect.numerator}:{source.sample_aspect.denominator}): "
            f"pixels {kept}"
        )
    mode = deinterlace or "off"
    rate, time_base = source.frame_rate, source.time_base
    if mode == "field":
        rate, time_base = (rate * 2 if rate else None), time_base / 2
    colour, hdr, tonemap = output_colour(source.colour), source.hdr, False
    depth = source.bit_depth
    if source.colour.hdr and config.colour.tonemap == "sdr":
        colour, hdr, tonemap = SDR_BT709, None, True
        notes.append(f"HDR ({source.colour.hdr.upper()}) is tone-mapped to BT.709 SDR (--tonemap sdr)")
    elif source.colour.hdr and depth < 10:
        depth = 10  # HDR in 8 bits bands; never make it worse than it arrived
    pix_fmt, format_notes = choose_pix_fmt(codec, depth, source.chroma, config.output.pix_fmt)
    notes += format_notes
    out_depth, out_chroma = pixel_format_facts(pix_fmt)
    if hdr is not None and codec is not None and not hdr.encoder_params(codec):
        notes.append(
            f"{codec} cannot carry HDR10 mastering-display and light-level metadata; the colour tags "
            f"({colour.describe()}) are kept. Use libx265 or libx264 to keep both"
        )
    if not source.colour.tagged and not tonemap:
        notes.append(f"the source has no colour tags; the output is tagged {colour.describe()}")
    return OutputDescription(
        width=size[0],
        height=size[1],
        sample_aspect=sar,
        frame_rate=rate,
        time_base=time_base,
        bit_depth=out_depth,
        chroma=out_chroma,
        pix_fmt=pix_fmt,
        colour=colour,
        hdr=hdr,
        deinterlace=mode,
        timecode=source.timecode,
        rotation=source.rotation,
        source=source,
        tonemap=tonemap,
        notes=tuple(notes),
    )


def with_size(description: OutputDescription, size: tuple[int, int]) -> OutputDescription:
    return replace(description, width=size[0], height=size[1])
