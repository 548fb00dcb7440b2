"""Is libx264 through PyAV deterministic? Encodes the same 80 frames (the sample, Lanczos-resized) 4 times per
variant and counts distinct bitstreams (packet payloads only, so no container field such as a random segment id
can differ). A finding for issue 21, not yet a fix:

    python tools/x264_determinism.py [--size 704x576] [--runs 4]

Measured 2026-12-06 on the 2-core EPYC with the test suite running beside it (PyAV 18.1, FFmpeg 8.1), 704x576:
threads=1 with each frame dropped right after encode(): 4 distinct of 4; threads=1 with every frame kept alive
until the end: 1 of 4; threads=4 either way: 4 of 4. So the encoder's output depends on when the frames handed
to it are freed (it still reads them after encode() returns), and x264's frame threading adds its own variation.
"""

from __future__ import annotations

import argparse
import hashlib
from fractions import Fraction
from pathlib import Path

import av
import cv2

ROOT = Path(__file__).resolve().parent.parent


def encode(frames, size, threads: int, keep_alive: bool) -> str:
    digest, alive = hashlib.sha256(), []
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height, context.pix_fmt, context.time_base = *size, "yuv420p", Fraction(1, 25)
    context.options = {"crf": "18", "preset": "veryfast"}
    context.thread_count = threads
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        if keep_alive:
            alive.append(frame)
        for packet in context.encode(frame):
            digest.update(bytes(packet))
    for packet in context.encode(None):
        digest.update(bytes(packet))
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="704x576")
    parser.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    with av.open(str(ROOT / "samples" / "football_256x144.mp4")) as container:
        frames = [
            cv2.resize(f.to_ndarray(format="rgb24"), size, interpolation=cv2.INTER_LANCZOS4)
            for f, _ in zip(container.decode(video=0), range(80))
        ]
    for threads in (1, 4):
        for keep_alive in (False, True):
            distinct = {encode(frames, size, threads, keep_alive) for _ in range(args.runs)}
            kept = "kept alive" if keep_alive else "dropped after encode()"
            print(f"{args.size} threads={threads}, frames {kept}: {len(distinct)} distinct of {args.runs}")


if __name__ == "__main__":
    main()
