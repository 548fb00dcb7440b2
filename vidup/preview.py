"""Single-frame QA sheets: the frame as the input, a Lanczos resize, and every engine stage, side by side with
zoomed crops at the same positions, each labelled with its name and time. The frame goes through the same
`Upscaler` as a full run; `context` earlier frames run first so the temporal prior is the real one."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from vidup.config import VidupConfig
from vidup.engines.contract import Engine
from vidup.errors import ConfigError
from vidup.pixels import to_8bit
from vidup.upscaler import Upscaler
from vidup.video.clip import describe_clip
from vidup.video.timing import Position, nominal_rate
from vidup.video.reader import VideoReader, probe

PANEL_WIDTH = 512
CROP = 96  # crop side in output pixels
ZOOM = 2


@dataclass
class Panel:
    name: str
    image: np.ndarray
    seconds: float


@dataclass
class Preview:
    sheet: np.ndarray
    panels: list[Panel]
    frame_index: int
    frames_decoded: int
    crops: list[tuple[int, int]]


def choose_crops(image: np.ndarray, count: int = 3, size: int = CROP) -> list[tuple[int, int]]:
    """Top-left corners of `count` detailed size x size cells from different parts of the frame.

    The most detailed cell (Laplacian energy) comes first; each next one is the most detailed cell at least a
    third of the frame's long side away from those chosen, so one busy area (a scoreboard's text) cannot take
    every crop. Where the frame is too small for that spacing, cells need only not overlap."""
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    energy = np.abs(cv2.Laplacian(gray, cv2.CV_32F))
    h, w = gray.shape
    cells = sorted(
        (
            (float(energy[y : y + size, x : x + size].mean()), x, y)
            for y in range(0, max(1, h - size + 1), size // 2)
            for x in range(0, max(1, w - size + 1), size // 2)
        ),
        reverse=True,
    )
    chosen: list[tuple[int, int]] = []
    for spacing in (max(size, max(h, w) // 3), size):
        for _, x, y in cells:
            if len(chosen) == count:
                return chosen
            if all(abs(x - cx) >= spacing or abs(y - cy) >= spacing for cx, cy in chosen):
                chosen.append((x, y))
    return chosen


def _label(image: np.ndarray, text: str) -> None:
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(image, (0, 0), (tw + 8, th + 10), (0, 0, 0), -1)
    cv2.putText(image, text, (4, th + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)


def render_sheet(panels: list[Panel], crops: list[tuple[int, int]], size: tuple[int, int]) -> np.ndarray:
    """One row per panel: the whole image (with the crop boxes) and its crops enlarged with nearest neighbour."""
    width, height = size
    thumb_h = int(round(PANEL_WIDTH * height / width))
    crop_px = CROP * ZOOM
    row_h = max(thumb_h, crop_px)
    sheet_w = PANEL_WIDTH + len(crops) * (crop_px + 4) + 4
    rows = []
    colours = [(255, 64, 64), (64, 255, 64), (64, 128, 255)]
    for panel in panels:
        image = (
            panel.image
            if panel.image.shape[1::-1] == (width, height)
            else cv2.resize(panel.image, (width, height), interpolation=cv2.INTER_AREA)
        )
        row = np.full((row_h + 4, sheet_w, 3), 24, np.uint8)
        thumb = cv2.resize(image, (PANEL_WIDTH, thumb_h), interpolation=cv2.INTER_AREA)
        scale = PANEL_WIDTH / width
        for (x, y), colour in zip(crops, colours):
            cv2.rectangle(
                thumb, (int(x * scale), int(y * scale)), (int((x + CROP) * scale), int((y + CROP) * scale)), colour, 1
            )
        _label(thumb, f"{panel.name}  {panel.seconds * 1000:.0f} ms")
        row[:thumb_h, :PANEL_WIDTH] = thumb
        for i, ((x, y), colour) in enumerate(zip(crops, colours)):
            crop = cv2.resize(image[y : y + CROP, x : x + CROP], (crop_px, crop_px), interpolation=cv2.INTER_NEAREST)
            cv2.rectangle(crop, (0, 0), (crop_px - 1, crop_px - 1), colour, 2)
            x0 = PANEL_WIDTH + 4 + i * (crop_px + 4)
            row[:crop_px, x0 : x0 + crop_px] = crop
        rows.append(row)
    return np.vstack(rows)


def preview_frame(
    clip: str | Path,
    config: VidupConfig,
    frame: int | None = None,
    seconds: float | None = None,
    context: int = 0,
    upscaler: Upscaler | None = None,
    engine_factory: Callable[[VidupConfig], Engine] | None = None,
) -> Preview:
    """Upscale one frame of `clip` (by index or time) and lay out its QA sheet. Seeks to the keyframe before the
    first frame needed and decodes nothing after the target."""
    if (frame is None) == (seconds is None):
        raise ConfigError("give exactly one of --frame or --time")
    if context < 0:
        raise ConfigError("--context must be >= 0")
    info = probe(clip)
    description = describe_clip(info, config)  # decoded as a full run decodes it: depth, fields, aspect
    rate = float(nominal_rate(description.frame_rate or info.frame_rate))
    total = info.frame_count * (2 if description.deinterlace == "field" else 1) if info.frame_count else None
    target = frame if frame is not None else int(round(seconds * rate))
    if total and target >= total:
        raise ConfigError(f"{clip} has {total} frames (0-{total - 1}); frame {target} is past its end")
    first = max(0, target - context)
    reader = VideoReader(clip, info, on_decode_error=config.on_decode_error, description=description)
    upscaler = upscaler or Upscaler(config, description=description, engine_factory=engine_factory)
    start = Position(seconds=first / rate) if first else None
    for decoded in reader.frames(start):
        if decoded.index < first:
            continue
        if decoded.index < target:
            upscaler.upscale_frame(decoded.rgb)  # context: builds the real temporal prior
            continue
        rgb = decoded.rgb
        size = upscaler.target_size(rgb.shape[1], rgb.shape[0])
        t0 = time.perf_counter()
        nearest = cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST)
        t1 = time.perf_counter()
        lanczos = cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)
        t2 = time.perf_counter()
        upscaler.upscale_frame(rgb)
        panels = [Panel("input (nearest)", nearest, t1 - t0), Panel("Lanczos", lanczos, t2 - t1)]
        panels += [Panel(s.name, s.image, s.seconds) for s in upscaler.last.stages()]
        panels = [Panel(p.name, to_8bit(p.image), p.seconds) for p in panels]  # the sheet is an 8-bit PNG
        crops = choose_crops(panels[1].image)
        return Preview(render_sheet(panels, crops, size), panels, decoded.index, reader.frames_decoded, crops)
    raise ConfigError(f"frame {target} was not found in {clip} (it holds fewer frames)")


def save_sheet(sheet: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"the preview sheet is a PNG; give a .png path, not {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"could not write {path}")
    return path
