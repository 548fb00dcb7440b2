"""Filter mode: frames in on stdin, upscaled frames out on stdout, nothing else on stdout.

Same frame-level path as `vidup upscale` (the `Upscaler`), so temporal state carries across frames and
resets at cuts. Frames in equals frames out; a malformed stream or a closed output pipe is a typed error.
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from typing import BinaryIO, Callable

from vidup.config import VidupConfig
from vidup.engines.contract import Engine
from vidup.errors import ConfigError, PipeFormatError, VidupError
from vidup.upscaler import Upscaler
from vidup.progress import progress_bar
from vidup.video.describe import describe_output
from vidup.video.timing import NOMINAL_RATE
from vidup.video.pipe import RawWriter, StreamFormat, Y4MWriter, read_raw_rgb, read_y4m


class OutputPipeClosedError(VidupError):
    """The process reading vidup's stdout went away."""

    exit_code = 3


def _parse_size(text: str | None) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in str(text).lower().split("x"))
        assert w > 0 and h > 0
        return w, h
    except (ValueError, AssertionError):
        raise ConfigError(f"--input-size must be WxH (like 640x360) for rawvideo input, got {text!r}") from None


def run_filter(
    stdin: BinaryIO,
    stdout: BinaryIO,
    config: VidupConfig,
    stream_format: str = "y4m",
    input_size: str | None = None,
    fps: str | None = None,
    upscaler: Upscaler | None = None,
    engine_factory: Callable[[VidupConfig], Engine] | None = None,
) -> int:
    """Returns the number of frames written; raises VidupError subclasses for bad streams and closed pipes."""
    if stream_format == "y4m":
        if input_size or fps:
            raise ConfigError("--input-size and --fps are for rawvideo; y4m carries its own size and rate")
        fmt, frames = read_y4m(stdin)  # the header is checked before the model loads
    else:
        width, height = _parse_size(input_size)
        try:
            rate = Fraction(fps) if fps else NOMINAL_RATE
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"--fps must be a number or a ratio, got {fps!r}") from None
        fmt, frames = StreamFormat(width, height, rate, "rgb24", full_range=True), read_raw_rgb(stdin, width, height)
    # One description for the stream, as for files: the output keeps the input's depth, chroma and range.
    description = describe_output(fmt.source(), upscaler.config if upscaler else config, None)
    upscaler = upscaler or Upscaler(config, description=description, engine_factory=engine_factory)
    width, height = fmt.width, fmt.height
    out_w, out_h = description.size
    written = 0
    try:
        writer = (
            Y4MWriter(stdout, out_w, out_h, fmt.rate, fmt.full_range, description.pix_fmt)
            if stream_format == "y4m"
            else RawWriter(stdout)
        )
        with progress_bar(None, config.quiet, "filter") as bar:
            for rgb in frames:
                if rgb.shape[:2] != (height, width):
                    raise PipeFormatError(
                        f"frame {written} is {rgb.shape[1]}x{rgb.shape[0]}, expected {width}x{height}"
                    )
                writer.write(upscaler.upscale_frame(rgb))
                written += 1
                bar.update(1)
        stdout.flush()
    except BrokenPipeError:
        if stdout is getattr(sys.stdout, "buffer", None):
            # Keep Python from complaining again when it flushes the dead stdout at exit.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except OSError:
                pass
        raise OutputPipeClosedError(f"the program reading stdout closed the pipe after {written} frames") from None
    return written
