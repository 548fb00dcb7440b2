"""Builders for the kinds of clip that arrive in a sports edit suite, each small and a few frames long:
interlaced, 10-bit, HDR10/HLG, anamorphic, timecode tracks, attachments, data streams, damaged and oddly timed
transport streams, colour bars."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from media import pattern

TS_BASE = Fraction(1, 90000)


def moving_bar(t: float, width: int, height: int) -> np.ndarray:
    """A white bar on grey moving right 6 px per field, with a static stripe: a scene whose fields differ."""
    image = np.full((height, width, 3), 60, np.uint8)
    x = int(8 + t * 6) % (width - 12)
    image[:, x : x + 10] = 235
    image[height // 4 : height // 4 + 6, :, 1] = 160
    return image


def comb_energy(gray: np.ndarray) -> float:
    """Mean absolute vertical second difference: large where odd and even lines disagree (combing)."""
    y = gray.astype(np.float32)
    return float(np.abs(2 * y[1:-1] - y[:-2] - y[2:]).mean())


def _audio(out, seconds: float, rate: int = 48000):
    sound = out.add_stream("aac", rate=rate, layout="stereo")

    def write():
        samples = int(seconds * rate)
        tone = (0.2 * np.sin(np.arange(samples) / rate * 2 * np.pi * 440)).astype(np.float32)
        for i in range(0, samples, 1024):
            chunk = np.ascontiguousarray(np.stack([tone[i : i + 1024]] * 2))
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, i
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))

    return write


def interlaced_clip(path: Path, frames: int = 12, size=(96, 64), rate: int = 25) -> Path:
    """25i, top field first: each frame woven from two fields captured half a frame apart."""
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {
            "preset": "ultrafast",
            "crf": "12",
            "flags": "+ilme+ildct",
            "x264-params": "interlaced=1:tff=1",
        }
        write_audio = _audio(out, frames / rate)
        for i in range(frames):
            top, bottom = moving_bar(2 * i, width, height), moving_bar(2 * i + 1, width, height)
            woven = top.copy()
            woven[1::2] = bottom[1::2]
            frame = av.VideoFrame.from_ndarray(woven, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        write_audio()
    return path


def ramp_frame(width: int, height: int, low: int, high: int, depth: int) -> av.VideoFrame:
    """A shallow horizontal luma ramp (codes `low`..`high` at `depth` bits), neutral chroma."""
    pix_fmt = "yuv420p10le" if depth == 10 else "yuv420p"
    frame = av.VideoFrame(width, height, pix_fmt)
    sample = np.uint16 if depth > 8 else np.uint8
    y = np.frombuffer(frame.planes[0], sample).reshape(height, -1)
    y[:, :width] = np.linspace(low, high, width).round().astype(sample)
    for plane in frame.planes[1:]:
        np.frombuffer(plane, sample)[:] = 1 << (depth - 1)
    return frame


def deep_clip(
    path: Path, pix_fmt: str = "yuv420p10le", codec: str = "ffv1", frames: int = 3, size=(256, 64), ramp=(400, 420)
) -> Path:
    """A 10-bit (or 4:2:2) clip holding a shallow ramp: 21 codes across the frame, which 8 bits would cut to 6."""
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        cc = video.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 1, 1, 1, 1
        for i in range(frames):
            frame = ramp_frame(width, height, *ramp, 10).reformat(format=pix_fmt)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


HDR10_PARAMS = "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):max-cll=1000,400"


def hdr_clip(path: Path, transfer: int = 16, frames: int = 3, size=(128, 64), metadata: bool = True) -> Path:
    """HDR10 (PQ, transfer 16) or HLG (18): BT.2020, 10-bit HEVC, with mastering display and light level."""
    width, height = size
    params = [
        "log-level=error",
        "colorprim=bt2020",
        "colormatrix=bt2020nc",
        f"transfer={'smpte2084' if transfer == 16 else 'arib-std-b67'}",
    ]
    if metadata:
        params += ["hdr10=1", HDR10_PARAMS]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx265", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p10le"
        video.options = {"x265-params": ":".join(params)}
        cc = video.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = 9, transfer, 9, 1
        rng = np.random.default_rng(0)
        for i in range(frames):
            rgb = (
                np.clip(pattern(i, width, height) / 255 * 0.6 + rng.random((height, width, 3)) * 0.05, 0, 1) * 65535
            ).astype(np.uint16)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb48le").reformat(
                format="yuv420p10le", dst_colorspace="BT2020", dst_color_range="MPEG"
            )
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def anamorphic_clip(path: Path, sar=Fraction(16, 11), size=(88, 72), frames: int = 4) -> Path:
    """SD-style anamorphic: stored 88x72, shown 16:9 (128x72) through its sample aspect ratio."""
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast"}
        video.codec_context.sample_aspect_ratio = sar
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def timecode_clip(path: Path, timecode: str = "10:00:00:00", frames: int = 10, rate: int = 25) -> Path:
    """A MOV with a timecode track (tmcd) starting at `timecode`, and audio."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast"}
        video.metadata["timecode"] = timecode
        write_audio = _audio(out, frames / rate)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        write_audio()
    return path


FONT = b"\x00\x01\x00\x00" + bytes(range(256)) * 4  # stands in for a TrueType font: copied byte for byte


def mkv_with_attachment(path: Path, frames: int = 6) -> Path:
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast"}
        out.add_attachment("ScoreboardSans.ttf", "font/ttf", FONT)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


def klv_ts(path: Path, frames: int = 6) -> Path:
    """MPEG-TS with a KLV metadata stream beside the video."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast", "bf": "0"}
        data = out.add_data_stream("klv")
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for packet in video.encode(frame):
                out.mux(packet)
            packet = av.Packet(b"\x06\x0e\x2b\x34" + bytes([i]) * 12)
            packet.stream, packet.time_base = data, TS_BASE
            packet.pts = packet.dts = i * 3600
            out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
    return path


def ts_clip(path: Path, frames: int = 50, size=(64, 48), start: int = 0, gop: int | None = None) -> Path:
    """MPEG-TS, H.264 and AAC, timestamps from `start` (in 1/90000 s)."""
    width, height = size
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "bf": "0"} | (
            {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"} if gop else {}
        )
        video.time_base = TS_BASE
        sound = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            frame.pts, frame.time_base = start + i * 3600, TS_BASE
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        tone = (0.2 * np.sin(np.arange(1024) / 48000 * 2 * np.pi * 440)).astype(np.float32)
        first = start * 48000 // 90000
        for i in range(0, int(frames / 25 * 48000), 1024):
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = 48000, first + i, Fraction(1, 48000)
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode(None):
            out.mux(packet)
    return path


def wrapped_ts(path: Path, frames: int = 50) -> Path:
    """A TS whose 33-bit clock wraps one second in: FFmpeg reads its first second at negative times."""
    return ts_clip(path, frames, start=2**33 - 90000)


def damaged_ts(path: Path, frames: int = 50) -> Path:
    """A TS with a stretch of garbage a third of the way in, hitting video and audio."""
    clean = ts_clip(path.with_name(path.stem + "_clean.ts"), frames)
    data = bytearray(clean.read_bytes())
    rng = random.Random(1)
    begin = len(data) // 3
    for i in range(begin, begin + 188 * 20):
        data[i] = rng.randrange(256)
    path.write_bytes(bytes(data))
    clean.unlink()
    return path


def resolution_change_ts(path: Path, frames: int = 20) -> Path:
    """H.264 in TS that switches from 64x48 to 80x64 halfway (a new SPS mid-stream, as at an ad break)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast", "bf": "0"}
        video.time_base = TS_BASE
        second = av.CodecContext.create("libx264", "w")
        second.width, second.height, second.pix_fmt, second.time_base = 80, 64, "yuv420p", TS_BASE
        second.options, second.framerate = {"preset": "ultrafast", "bf": "0"}, 25
        for i in range(frames):
            size = (64, 48) if i < frames // 2 else (80, 64)
            frame = av.VideoFrame.from_ndarray(pattern(i, *size), format="rgb24")
            frame.pts, frame.time_base = i * 3600, TS_BASE
            encoder = video if i < frames // 2 else second
            for packet in encoder.encode(frame):
                packet.stream, packet.time_base = video, TS_BASE
                out.mux(packet)
            if i == frames // 2 - 1:
                for packet in video.encode(None):
                    out.mux(packet)
        for packet in second.encode(None):
            packet.stream, packet.time_base = video, TS_BASE
            out.mux(packet)
    return path


def duplicate_pts_mkv(path: Path, frames: int = 10, duplicate_at: int = 5) -> Path:
    """Matroska in which one frame repeats the previous frame's timestamp."""
    source = path.with_name(path.stem + "_src.mkv")
    with av.open(str(source), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.options = {"preset": "ultrafast", "bf": "0"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, 64, 48), format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    with av.open(str(source)) as src, av.open(str(path), "w") as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        packets = [p for p in src.demux(video=0) if p.size]
        for i, packet in enumerate(packets):
            if i == duplicate_at:
                packet.pts = packets[i - 1].pts
            packet.dts, packet.stream = None, stream
            out.mux(packet)
    source.unlink()
    return path


def colour_bars(width: int = 128, height: int = 72) -> np.ndarray:
    """75% colour bars (SMPTE order): flat fields at code 191 and 0."""
    bars = [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
    image = np.zeros((height, width, 3), np.uint8)
    edges = np.linspace(0, width, len(bars) + 1).round().astype(int)
    for (r, g, b), x0, x1 in zip(bars, edges[:-1], edges[1:]):
        image[:, x0:x1] = (r, g, b)
    return image
