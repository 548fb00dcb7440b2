"""Builders for small test clips: exact timestamps, audio, subtitles, odd sizes, damage."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SRT = "1\n00:00:00,000 --> 00:00:00,500\nKick-off\n\n2\n00:00:00,600 --> 00:00:00,900\nGoal!\n"


def pattern(index: int, width: int, height: int) -> np.ndarray:
    """A frame whose content moves with the index, so frames are distinct and identifiable."""
    y, x = np.mgrid[0:height, 0:width]
    r = (x * 3 + index * 7) % 256
    g = (y * 5 + index * 11) % 256
    b = ((x // 8 + y // 8 + index) % 2) * 200 + 30
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def make_clip(
    path: Path,
    *,
    frames: int = 12,
    size=(64, 48),
    pts: list[int] | None = None,
    time_base=Fraction(1, 1000),
    rate=25,
    audio: bool = True,
    subtitles: bool = False,
    language: str = "fra",
    codec: str = "libx264",
    gop: int | None = None,
    rotation: int = 0,
    commentary: str | None = None,
) -> Path:
    """Write a clip; `pts` (in `time_base`) makes it variable-frame-rate; `commentary` (a language) adds a second
    audio track with another tone."""
    pts = pts if pts is not None else [int(round(i / rate / time_base)) for i in range(frames)]
    subs_in = None
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height = size
        odd = size[0] % 2 or size[1] % 2
        video.pix_fmt = "yuv444p" if odd else "yuv420p"  # 4:2:0 needs even sides
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if rotation:
            video.set_display_rotation(rotation)  # a phone clip: stored landscape, shown turned
        if codec == "libx264":
            video.options = {"crf": "18", "preset": "ultrafast"}
            if gop:
                video.options |= {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        tracks = []  # (stream, tone Hz)
        if audio:
            sound = out.add_stream("aac", rate=48000, layout="stereo")
            sound.metadata["language"] = language
            tracks.append((sound, 440))
        if commentary:
            voice = out.add_stream("aac", rate=48000, layout="stereo")
            voice.metadata["language"] = commentary
            voice.disposition = type(voice.disposition).comment
            tracks.append((voice, 660))
        if subtitles:
            srt = path.with_suffix(".srt")
            srt.write_text(SRT)
            subs_in = av.open(str(srt))
            sub_out = out.add_stream_from_template(subs_in.streams[0])
            sub_out.metadata["language"] = "eng"
            sub_out.disposition = type(sub_out.disposition).forced
        for i, t in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(pattern(i, *size), format="rgb24")
            frame.pts, frame.time_base = t, time_base
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        for sound, hz in tracks:
            duration = (pts[-1] * time_base) + Fraction(1, rate)
            samples = int(duration * 48000)
            tone = (0.2 * np.sin(np.arange(samples) / 48000 * 2 * np.pi * hz)).astype(np.float32)
            for i in range(0, samples, 1024):
                chunk = np.ascontiguousarray(np.stack([tone[i : i + 1024]] * 2))
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                af.sample_rate, af.pts = 48000, i
                out.mux(sound.encode(af))
            out.mux(sound.encode(None))
        if subs_in is not None:
            for packet in subs_in.demux(subs_in.streams[0]):
                if packet.pts is None:
                    continue
                packet.stream = sub_out
                out.mux(packet)
            subs_in.close()
    return path


def packets(path: Path, kind: str, nth: int = 0) -> list[tuple[int | None, bytes]]:
    """(pts in seconds*1e6, payload) of every packet of the `nth` stream of `kind`."""
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        if len(streams) <= nth:
            return []
        return [
            (None if p.pts is None else int(round(p.pts * p.time_base * 1_000_000)), bytes(p))
            for p in c.demux(streams[nth])
            if p.size
        ]


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [round(float(f.time), 4) for f in c.decode(video=0)]


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
