"""Render the bundled broadcast-style football sample, procedurally and deterministically.

A striped pitch with markings, a crowd band, ten players in numbered kits who run, a ball, a scoreboard with
a ticking clock, a camera pan, one hard cut to a closer shot, and a matching crowd/whistle audio track.
Frames are drawn at high resolution (the ground truth) and area-downscaled to the low-resolution clip.

    python tools/make_sample.py                      # writes samples/football_256x144.mp4
    python tools/make_sample.py --ground-truth hr.mkv  # also writes the 1024x576 ground truth (lossless)
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

FPS = 25
SECONDS = 4
CUT_FRAME = 60  # the hard cut to a closer shot
HR_SIZE = (1024, 576)
LR_SIZE = (256, 144)
SAMPLE_RATE = 48000
WORLD = (3200, 1400)  # world canvas in HR pixels at zoom 1
PITCH_TOP = 260  # the crowd band is above this line
KITS = [((200, 30, 30), (250, 250, 250)), ((30, 60, 200), (250, 220, 40))]  # (shirt, shorts/number) RGB


def render_world(rng: np.random.Generator) -> np.ndarray:
    w, h = WORLD
    world = np.zeros((h, w, 3), np.uint8)
    # Crowd: a dense field of small coloured heads and shirts, with a dark stand behind them.
    world[:PITCH_TOP] = (40, 40, 48)
    for _ in range(9000):
        x, y = int(rng.integers(0, w)), int(rng.integers(10, PITCH_TOP - 30))
        colour = tuple(int(c) for c in rng.integers(40, 255, 3))
        cv2.rectangle(world, (x - 5, y + 6), (x + 5, y + 20), colour, -1)
        cv2.circle(world, (x, y), 5, (int(rng.integers(150, 230)), int(rng.integers(110, 180)), 120), -1)
    cv2.rectangle(world, (0, PITCH_TOP - 40), (w, PITCH_TOP - 10), (20, 20, 90), -1)  # advertising board
    for i, x in enumerate(range(40, w, 420)):
        cv2.putText(
            world,
            ["VIDUP", "KICKOFF", "GOAL+"][i % 3],
            (x, PITCH_TOP - 16),
            cv2.FONT_HERSHEY_DUPLEX,
            0.9,
            (240, 240, 240),
            2,
            cv2.LINE_AA,
        )
    # Pitch: mowing stripes with a little grass noise.
    stripe = 160
    for i, x in enumerate(range(0, w, stripe)):
        world[PITCH_TOP:, x : x + stripe] = (52, 140, 58) if i % 2 else (62, 158, 66)
    noise = rng.normal(0, 6, (h - PITCH_TOP, w, 1))
    world[PITCH_TOP:] = np.clip(world[PITCH_TOP:].astype(np.float32) + noise, 0, 255).astype(np.uint8)
    line = (235, 235, 235)
    cv2.rectangle(world, (80, PITCH_TOP + 40), (w - 80, h - 40), line, 4, cv2.LINE_AA)
    cv2.line(world, (w // 2, PITCH_TOP + 40), (w // 2, h - 40), line, 4, cv2.LINE_AA)
    cv2.circle(world, (w // 2, (PITCH_TOP + h) // 2), 170, line, 4, cv2.LINE_AA)
    cv2.rectangle(world, (80, PITCH_TOP + 260), (480, h - 260), line, 4, cv2.LINE_AA)
    cv2.rectangle(world, (w - 480, PITCH_TOP + 260), (w - 80, h - 260), line, 4, cv2.LINE_AA)
    return world


def players_at(t: float) -> list[tuple[float, float, int, int]]:
    """(world x, world y, kit, number) for each player at time t."""
    out = []
    for i in range(10):
        kit = i % 2
        base_x = 1100 + 130 * i + 160 * t * (1 if kit == 0 else 0.7)
        base_y = PITCH_TOP + 250 + 80 * (i % 5) + 40 * np.sin(1.3 * t + i)
        out.append((base_x, base_y, kit, [7, 10, 4, 9, 11, 3, 8, 5, 6, 2][i]))
    return out


def draw_player(img, x, y, zoom, kit, number, t, i):
    s = zoom
    shirt, trim = KITS[kit]
    stride = np.sin(8 * t + i) * 10 * s
    hip = (int(x), int(y - 40 * s))
    for dx in (-stride, stride):  # legs
        cv2.line(img, hip, (int(x + dx), int(y)), (225, 180, 150), max(1, int(7 * s)), cv2.LINE_AA)
    cv2.rectangle(img, (int(x - 16 * s), int(y - 58 * s)), (int(x + 16 * s), int(y - 38 * s)), trim, -1, cv2.LINE_AA)
    cv2.rectangle(img, (int(x - 18 * s), int(y - 100 * s)), (int(x + 18 * s), int(y - 56 * s)), shirt, -1, cv2.LINE_AA)
    cv2.putText(
        img,
        str(number),
        (int(x - 12 * s), int(y - 66 * s)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.75 * s,
        trim,
        max(1, int(2 * s)),
        cv2.LINE_AA,
    )
    cv2.circle(img, (int(x), int(y - 112 * s)), int(12 * s), (225, 180, 150), -1, cv2.LINE_AA)


def camera(index: int) -> tuple[float, float, float]:
    """(world x of the left edge, world y of the top edge, zoom) for a frame."""
    t = index / FPS
    if index < CUT_FRAME:
        return 700 + 220 * t, 60, 0.72  # the wide shot pans right
    return 1750 + 90 * (t - CUT_FRAME / FPS), 470, 1.9  # the close shot, after the cut


def render_frame(world: np.ndarray, index: int) -> np.ndarray:
    t = index / FPS
    cam_x, cam_y, zoom = camera(index)
    matrix = np.float32([[zoom, 0, -cam_x * zoom], [0, zoom, -cam_y * zoom]])
    frame = cv2.warpAffine(
        world, matrix, HR_SIZE, flags=cv2.INTER_AREA if zoom < 1 else cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    placed = sorted(players_at(t), key=lambda p: p[1])
    for i, (x, y, kit, number) in enumerate(placed):
        draw_player(frame, (x - cam_x) * zoom, (y - cam_y) * zoom, zoom, kit, number, t, i)
    ball = (1500 + 260 * t, PITCH_TOP + 420 + 60 * abs(np.sin(3 * t)))
    cv2.circle(
        frame,
        (int((ball[0] - cam_x) * zoom), int((ball[1] - cam_y) * zoom)),
        max(2, int(9 * zoom)),
        (250, 250, 250),
        -1,
        cv2.LINE_AA,
    )
    # Scoreboard overlay (screen space, not moved by the camera).
    cv2.rectangle(frame, (24, 20), (330, 64), (15, 15, 40), -1)
    cv2.rectangle(frame, (24, 20), (120, 64), (200, 30, 30), -1)
    clock = f"{23 + int(t) // 60:02d}:{(17 + int(t)) % 60:02d}"
    cv2.putText(frame, "RED 1-0 BLU", (34, 52), cv2.FONT_HERSHEY_DUPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.putText(frame, clock, (250, 52), cv2.FONT_HERSHEY_DUPLEX, 0.7, (255, 230, 80), 2, cv2.LINE_AA)
    return frame


def render_audio(rng: np.random.Generator) -> np.ndarray:
    """Stereo float32 (2, n): crowd murmur (low-passed noise) with whistles at the start and at the cut."""
    n = SECONDS * SAMPLE_RATE
    spectrum = np.fft.rfft(rng.normal(0, 1, (2, n)), axis=1)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spectrum *= 1 / (1 + (freqs / 900) ** 2)
    crowd = np.fft.irfft(spectrum, n=n, axis=1)
    crowd *= 0.15 / np.abs(crowd).max()
    t = np.arange(n) / SAMPLE_RATE
    for start in (0.2, CUT_FRAME / FPS):
        burst = (t >= start) & (t < start + 0.35)
        crowd[:, burst] += 0.25 * np.sin(2 * np.pi * 3150 * t[burst])
    return crowd.astype(np.float32)


def write_clip(path: Path, frames, size, audio: np.ndarray | None, codec="libx264", options=None) -> None:
    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=FPS)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        video.options = options or {}
        cc = video.codec_context
        cc.color_primaries = cc.color_trc = cc.colorspace = 1  # BT.709
        cc.color_range = 1
        if audio is not None:
            sound = out.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
            sound.metadata["language"] = "eng"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", src_colorspace="ITU709", dst_colorspace="ITU709"
            )
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            step = 1024
            for i in range(0, audio.shape[1], step):
                chunk = np.ascontiguousarray(audio[:, i : i + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = SAMPLE_RATE
                frame.pts = i
                out.mux(sound.encode(frame))
            out.mux(sound.encode(None))


def hr_frames(count: int = FPS * SECONDS):
    world = render_world(np.random.default_rng(7))
    for index in range(count):
        yield index, render_frame(world, index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples" / "football_256x144.mp4"
    )
    parser.add_argument("--ground-truth", type=Path, help="also write the 1024x576 frames here, losslessly (.mkv)")
    args = parser.parse_args()

    low = (cv2.resize(hr, LR_SIZE, interpolation=cv2.INTER_AREA) for _, hr in hr_frames())
    write_clip(args.out, low, LR_SIZE, render_audio(np.random.default_rng(11)), options={"crf": "20", "preset": "slow"})
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    if args.ground_truth:
        write_clip(
            args.ground_truth, (hr for _, hr in hr_frames()), HR_SIZE, None, options={"crf": "0", "preset": "veryfast"}
        )
        print(f"wrote {args.ground_truth}")


if __name__ == "__main__":
    main()
