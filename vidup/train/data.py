"""Training data for `vidup train-lora`: a folder of images (each with an optional KohyaSS-style `.txt` caption
beside it) and/or video clips, whose frames are sampled across shots.

Everything that can be wrong with the data is found by `scan`, before any model loads. Images go into
aspect-ratio buckets (area about resolution^2, sides multiples of 16), so a wide broadcast frame trains whole
instead of centre-cropped to a square.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from vidup.config import ShotConfig, TrainConfig
from vidup.errors import TrainingDataError
from vidup.temporal.shots import ShotDetector
from vidup.video.reader import VideoReader, probe

log = logging.getLogger("vidup")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".m4v", ".ts", ".m2ts", ".mts", ".mxf", ".avi", ".webm"}
BUCKET_MULTIPLE = 16  # FLUX: VAE x8, then 2x2 patches
MAX_ASPECT = 2.5  # buckets from 1:2.5 to 2.5:1
SIGNATURE_SIDE = 64  # frames compared for near-duplicates at this size


@dataclass(frozen=True)
class Source:
    """One training image: a still, or a frame of a clip."""

    path: Path
    caption: str
    frame: int | None = None  # the frame index for clips

    @property
    def name(self) -> str:
        return self.path.name if self.frame is None else f"{self.path.name}#{self.frame}"


@dataclass
class Dataset:
    stills: list[Source]
    clips: list[tuple[Path, str]]  # clip, caption (frames are picked when the data is prepared)
    folder: Path

    def summary(self) -> str:
        return f"{len(self.stills)} images, {len(self.clips)} clips from {self.folder.name}"


def read_caption(path: Path, default: str) -> str:
    caption = path.with_suffix(".txt")
    if caption.is_file():
        text = caption.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return text
    return default


def scan(folder: str | Path, config: TrainConfig) -> Dataset:
    """The data folder's images and clips, checked: each problem is a one-line TrainingDataError."""
    folder = Path(folder)
    if not folder.exists():
        raise TrainingDataError(f"data folder {folder} does not exist")
    if not folder.is_dir():
        raise TrainingDataError(f"{folder} is not a folder; give a folder of images and/or clips")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    clips = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    if not images and not clips:
        raise TrainingDataError(
            f"data folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            f"or clips ({', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    media_stems = {p.with_suffix("") for p in images + clips}
    orphans = [p for p in files if p.suffix.lower() == ".txt" and p.with_suffix("") not in media_stems]
    if orphans:
        names = ", ".join(p.name for p in orphans[:5]) + (" ..." if len(orphans) > 5 else "")
        raise TrainingDataError(f"{len(orphans)} captions have no image or clip beside them: {names}")
    unreadable = [p for p in images if not _readable_image(p)]
    if unreadable:
        names = ", ".join(p.name for p in unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        raise TrainingDataError(f"{len(unreadable)} images cannot be read: {names}")
    for clip in clips:
        try:
            probe(clip)
        except Exception as exc:  # noqa: BLE001 - any reason a clip cannot be opened is reported the same way
            raise TrainingDataError(f"clip {clip.name} cannot be read: {exc}") from None
    stills = [Source(p, read_caption(p, config.default_caption)) for p in images]
    return Dataset(stills, [(c, read_caption(c, config.default_caption)) for c in clips], folder)


def _readable_image(path: Path) -> bool:
    data = np.fromfile(path, np.uint8)
    return data.size > 0 and cv2.imdecode(data, cv2.IMREAD_COLOR) is not None


def load_image(path: Path) -> np.ndarray:
    image = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --- frames from clips --------------------------------------------------------------------------------------------


def _signature(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = SIGNATURE_SIDE / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)


def pick_clip_frames(clip: Path, config: TrainConfig, shots: ShotConfig) -> list[int]:
    """Frame indices to train on: spread over every shot (the shot detector the upscale uses, with its settings),
    evenly within a shot, at most `frames_per_shot` per shot and `clip_frames` per clip, skipping near-duplicates of
    frames already picked. Decodes the clip once, at low resolution."""
    detector = ShotDetector(shots)
    shots: list[list[tuple[int, np.ndarray]]] = []
    for frame in VideoReader(clip, max_side=256).frames():
        if detector.is_cut(frame.rgb) or not shots:
            shots.append([])
        shots[-1].append((frame.index, _signature(frame.rgb)))
    per_shot = max(1, min(config.frames_per_shot, math.ceil(config.clip_frames / max(1, len(shots)))))
    rounds: list[list[tuple[int, np.ndarray]]] = []
    for shot in shots:  # candidates of each shot, middle first, then spread out
        count = min(per_shot, len(shot))
        positions = [int((k + 0.5) * len(shot) / count) for k in range(count)]
        positions.sort(key=lambda p: abs(p - len(shot) // 2))
        rounds.append([shot[p] for p in positions])
    picked: list[tuple[int, np.ndarray]] = []
    for depth in range(per_shot):  # one frame from every shot before a second from any
        for candidates in rounds:
            if depth >= len(candidates) or len(picked) >= config.clip_frames:
                continue
            index, signature = candidates[depth]
            if all(
                np.abs(signature - s).mean() >= config.duplicate_threshold
                for _, s in picked
                if s.shape == signature.shape
            ):
                picked.append((index, signature))
    return sorted(index for index, _ in picked)


def clip_frames(clip: Path, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    wanted = set(indices)
    for frame in VideoReader(clip).frames():
        if frame.index in wanted:
            yield frame.index, frame.rgb
            wanted.discard(frame.index)
            if not wanted:
                return


def sources(dataset: Dataset, config: TrainConfig, shots: ShotConfig) -> list[Source]:
    """Every training image: the stills, then each clip's picked frames (shots cut as the upscale cuts them)."""
    items = list(dataset.stills)
    for clip, caption in dataset.clips:
        items += [Source(clip, caption, index) for index in pick_clip_frames(clip, config, shots)]
    return items


def images(items: list[Source]) -> Iterator[tuple[Source, np.ndarray]]:
    """(source, RGB image) for each item, clips decoded once each."""
    by_clip: dict[Path, list[Source]] = {}
    for item in items:
        if item.frame is None:
            yield item, load_image(item.path)
        else:
            by_clip.setdefault(item.path, []).append(item)
    for clip, members in by_clip.items():
        lookup = {m.frame: m for m in members}
        for index, rgb in clip_frames(clip, sorted(lookup)):
            yield lookup[index], rgb


# --- aspect-ratio buckets -----------------------------------------------------------------------------------------


def buckets(resolution: int) -> list[tuple[int, int]]:
    """(width, height) pairs of about resolution^2 pixels, sides multiples of 16, aspect 1:2.5 to 2.5:1."""
    area = resolution * resolution
    found = set()
    width = BUCKET_MULTIPLE
    while width <= resolution * MAX_ASPECT:
        height = int(area / width) // BUCKET_MULTIPLE * BUCKET_MULTIPLE
        if height >= BUCKET_MULTIPLE and 1 / MAX_ASPECT <= width / height <= MAX_ASPECT:
            found.add((width, height))
        width += BUCKET_MULTIPLE
    return sorted(found)


def bucket_for(width: int, height: int, resolution: int) -> tuple[int, int]:
    aspect = math.log(width / height)
    return min(buckets(resolution), key=lambda b: (abs(math.log(b[0] / b[1]) - aspect), -b[0] * b[1]))


def fit_to_bucket(image: np.ndarray, resolution: int, small_images: str, name: str) -> np.ndarray:
    """The image scaled to cover its bucket and centre-cropped by the few pixels of aspect difference left."""
    h, w = image.shape[:2]
    bw, bh = bucket_for(w, h, resolution)
    scale = max(bw / w, bh / h)
    if scale > 1.0 + 1e-6:
        if small_images == "refuse":
            raise TrainingDataError(
                f"{name} is {w}x{h}, smaller than its {bw}x{bh} training bucket; use larger "
                "images, a lower --resolution, or train.small_images = 'upsample'"
            )
        log.warning(
            "%s is %dx%d, smaller than its %dx%d bucket: upsampled (it trains blurrier detail)", name, w, h, bw, bh
        )
    new_w, new_h = max(bw, round(w * scale)), max(bh, round(h * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    x0, y0 = (new_w - bw) // 2, (new_h - bh) // 2
    return np.ascontiguousarray(resized[y0 : y0 + bh, x0 : x0 + bw])
