"""The feed-forward SR engine: one network forward per frame, tiled for large frames, in reduced precision
where the hardware has it, then resized to the target with a proper filter."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vidup.device import Placement, choose_placement
from vidup.engines.base import StageOutput
from vidup.engines.sr_archs import Architecture
from vidup.engines.weights import load_sr_model
from vidup.pixels import peak
from vidup.sizing import resize_rgb
from vidup.temporal.seeding import anchor_to_input, blend_high_frequencies

if TYPE_CHECKING:
    from vidup.config import VidupConfig
    from vidup.temporal.state import TemporalPrior


def tile_boxes(length: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, length) into near-equal spans of at most `tile`."""
    count = max(1, -(-length // tile))
    edges = np.linspace(0, length, count + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


class SREngine:
    name = "sr"

    def __init__(self, arch: Architecture, model: nn.Module, model_name: str, placement: Placement,
                 tile: int = 384, tile_pad: int = 16, temporal_strength: float = 1.0, temporal_sigma: float = 1.5,
                 color_anchor: bool = True, color_anchor_sigma: float = 1.0):
        self.arch = arch
        self.model_name = model_name
        self.placement = placement
        self.scale = int(model.scale)
        self.tile = tile
        self.tile_pad = tile_pad
        model = model.to(placement.device).eval()
        if placement.device.type != "cpu":
            model = model.to(placement.dtype)  # accelerators hold weights in the compute dtype
        self.model = model.to(memory_format=torch.channels_last)
        self._stages: list[StageOutput] = []
        self.temporal_strength, self.temporal_sigma = temporal_strength, temporal_sigma
        self.color_anchor, self.color_anchor_sigma = color_anchor, color_anchor_sigma

    @classmethod
    def from_config(cls, config: "VidupConfig") -> "SREngine":
        arch, model, name = load_sr_model(config.sr.model)
        placement = choose_placement(config.device, config.precision,
                                     supports_bf16=arch.supports_bf16, supports_fp16=arch.supports_fp16)
        return cls(arch, model, name, placement, tile=config.sr.tile, tile_pad=config.sr.tile_pad,
                   temporal_strength=config.temporal.sr_strength, temporal_sigma=config.temporal.sr_sigma,
                   color_anchor=config.sr.color_anchor, color_anchor_sigma=config.sr.color_anchor_sigma)

    def _autocast(self):
        if self.placement.device.type == "cpu" and self.placement.autocast:
            return torch.autocast("cpu", dtype=self.placement.dtype)
        return contextlib.nullcontext()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model(x.contiguous(memory_format=torch.channels_last)).float()

    @torch.inference_mode()
    def super_resolve(self, frame: np.ndarray) -> np.ndarray:
        """The network's native-scale output for one RGB frame (uint8 or uint16), in the same dtype."""
        dtype = torch.float32 if self.placement.device.type == "cpu" else self.placement.dtype
        top = peak(frame.dtype)
        frame = np.require(frame, requirements="W")  # decoded frames can be read-only; torch wants writable memory
        x = torch.from_numpy(frame).to(self.placement.device).permute(2, 0, 1)[None].to(dtype) / top
        _, _, h, w = x.shape
        s, pad = self.scale, self.tile_pad
        if not self.tile or (h <= self.tile and w <= self.tile):
            y = self._forward(x)
        else:
            y = torch.empty((1, 3, h * s, w * s), device=x.device)
            for y0, y1 in tile_boxes(h, self.tile):
                for x0, x1 in tile_boxes(w, self.tile):
                    py0, py1, px0, px1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
                    out = self._forward(x[:, :, py0:py1, px0:px1])
                    y[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = out[
                        :, :, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s
                    ]
        y = (y[0].clamp_(0, 1) * top).round_()
        if frame.dtype == np.uint8:
            return y.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return y.to(torch.int32).permute(1, 2, 0).cpu().numpy().astype(frame.dtype)

    def upscale(self, frame: np.ndarray, size: tuple[int, int], prior: "TemporalPrior | None" = None) -> np.ndarray:
        started = time.perf_counter()
        if max(frame.shape[:2]) >= max(size):
            # Already at least as large as the target: the network could only add detail to be thrown away.
            out = resize_rgb(frame, *size)
            self._stages = [StageOutput("resize (input >= target)", out, time.perf_counter() - started)]
            return out
        sr = self.super_resolve(frame)
        sr_done = time.perf_counter()
        out = resize_rgb(sr, *size)
        resized = time.perf_counter()
        self._stages = [StageOutput(f"{self.model_name} x{self.scale}", sr, sr_done - started),
                        StageOutput("resized to target", out, resized - sr_done)]
        if self.color_anchor:
            # Colour and shading below the anchor scale come from the input itself, detail from the network.
            out = anchor_to_input(out, frame, self.color_anchor_sigma)
            anchored = time.perf_counter()
            self._stages.append(StageOutput("colour anchored to input", out, anchored - resized))
            resized = anchored
        if prior is not None and self.temporal_strength > 0:
            out = blend_high_frequencies(out, prior.warped_output, prior.confidence, self.temporal_strength,
                                         self.temporal_sigma)
            self._stages.append(StageOutput("temporal blend", out, time.perf_counter() - resized))
        return out

    def stages(self) -> list[StageOutput]:
        return list(self._stages)
