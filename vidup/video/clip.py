"""The clip's output description, decided once per clip (deinterlacing included, with idet where the flags do not
say) and handed to the reader, the `Upscaler` and the writers."""

from __future__ import annotations

from dataclasses import replace

from vidup.config import VidupConfig
from vidup.video.deinterlace import decide
from vidup.video.describe import OutputDescription, describe_output
from vidup.video.reader import VideoInfo, sniff_interlacing


def describe_clip(info: VideoInfo, config: VidupConfig, codec: str | None = None) -> OutputDescription:
    """The clip's output description, with the deinterlacing decision (idet where the flags do not say)."""
    interlaced = info.source.interlaced
    if interlaced is None and config.deinterlace == "auto":
        interlaced = sniff_interlacing(info.path, info, config.idet_frames)
    mode, note = decide(config.deinterlace, interlaced)
    description = describe_output(info.source, config, codec, mode)
    return replace(description, notes=((note,) if note else ()) + description.notes)
