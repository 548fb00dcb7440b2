"""The feed-forward SR engine: the network runs on batches of frames (tiled for large ones), in reduced precision
where the hardware has it; then, frame by frame in order, the result is resized to the target, anchored to the
input's colours and blended with the warped previous output.

Two frame paths finish a frame. On a GPU (or `temporal.backend = "torch"`) everything after the network stays on
the device as tensors (`vidup.temporal.torch_ops`) and one finished frame comes back to the host; on the CPU the
lean OpenCV path does the same steps. The two agree within a code (tested).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from vidup.device import Placement, choose_placement
from vidup.config import SR_AUTO_BATCH_GPU
from vidup.engines.contract import EngineOutput, StageOutput
from vidup.engines.sr_archs import Architecture
from vidup.engines.weights import load_sr_model
from vidup.pixels import peak
from vidup.sizing import resize_rgb
from vidup.temporal import torch_ops
from vidup.engines.anchor import anchor_to_input
from vidup.temporal.seeding import HistoryBlend

if TYPE_CHECKING:
    from vidup.config import VidupConfig
    from vidup.temporal.state import TemporalPrior

MIN_TILE = 32  # smallest SR tile the out-of-memory backoff goes down to (and the smallest sr.tile allowed)


def tile_boxes(length: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, length) into near-equal spans of at most `tile`."""
    count = max(1, -(-length // tile))
    edges = np.linspace(0, length, count + 1).round().astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


@dataclass
class SRCarry:
    """What the SR engine hands the next frame: on the tensor path, the finished frame on the device (1, 3, H, W)
    in [0, 1], so the next warp needs no upload."""

    device_output: torch.Tensor


class SREngine:
    name = "sr"

    def __init__(
        self,
        arch: Architecture,
        model: nn.Module,
        model_name: str,
        placement: Placement,
        tile: int = 384,
        tile_pad: int = 16,
        color_anchor: bool = True,
        color_anchor_sigma: float = 1.0,
        batch: int | str = 1,
        backend: str = "auto",
        history: HistoryBlend | None = None,
    ):
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
        self.history = history or HistoryBlend()
        self.color_anchor, self.color_anchor_sigma = color_anchor, color_anchor_sigma
        on_device = placement.device.type != "cpu"
        self.batch = (SR_AUTO_BATCH_GPU if on_device else 1) if batch == "auto" else int(batch)
        self.tensor_path = backend == "torch" or (backend == "auto" and on_device)
        self._input_side = 0  # long side of the last network input (the first tile when backing off)

    @classmethod
    def from_config(cls, config: "VidupConfig") -> "SREngine":
        arch, model, name = load_sr_model(config.sr.model)
        placement = choose_placement(
            config.device, config.precision, supports_bf16=arch.supports_bf16, supports_fp16=arch.supports_fp16
        )
        return cls(
            arch,
            model,
            name,
            placement,
            tile=config.sr.tile,
            tile_pad=config.sr.tile_pad,
            color_anchor=config.sr.color_anchor,
            color_anchor_sigma=config.sr.color_anchor_sigma,
            batch=config.sr.batch,
            backend=config.temporal.backend,
            history=HistoryBlend.from_config(config.temporal),
        )

    # --- the network ------------------------------------------------------------------------------------------

    def _autocast(self):
        if self.placement.device.type == "cpu" and self.placement.autocast:
            return torch.autocast("cpu", dtype=self.placement.dtype)
        return contextlib.nullcontext()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model(x.contiguous(memory_format=torch.channels_last)).float()

    def _to_input(self, frames: list[np.ndarray]) -> torch.Tensor:
        dtype = torch.float32 if self.placement.device.type == "cpu" else self.placement.dtype
        top = peak(frames[0].dtype)
        batch = np.stack([np.require(f, requirements="W") for f in frames])  # decoded frames can be read-only
        return torch.from_numpy(batch).to(self.placement.device).permute(0, 3, 1, 2).to(dtype) / top

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        s, pad = self.scale, self.tile_pad
        y = torch.empty((x.shape[0], 3, h * s, w * s), device=x.device)
        for y0, y1 in tile_boxes(h, self.tile):
            for x0, x1 in tile_boxes(w, self.tile):
                py0, py1, px0, px1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
                out = self._forward(x[:, :, py0:py1, px0:px1])
                y[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = out[
                    :, :, (y0 - py0) * s : (y1 - py0) * s, (x0 - px0) * s : (x1 - px0) * s
                ]
        return y

    @torch.inference_mode()
    def network(self, frames: list[np.ndarray]) -> list[torch.Tensor]:
        """The network's native-scale output for each frame, (3, sH, sW) in [0, 1] on the device (not yet rounded
        to the frame's codes). Frames that fit in one tile go through in batches of `batch`."""
        outputs = []
        for i in range(0, len(frames), max(1, self.batch)):
            chunk = frames[i : i + max(1, self.batch)]
            x = self._to_input(chunk)
            h, w = x.shape[-2:]
            self._input_side = max(h, w)
            y = self._forward(x) if not self.tile or (h <= self.tile and w <= self.tile) else self._tiled(x)
            outputs.extend(y)
        return outputs

    # --- out-of-memory backoff (vidup.backoff) -------------------------------------------------------------------

    def footprint(self) -> tuple[int, int]:
        return self.batch, self.tile

    def set_footprint(self, state: tuple[int, int]) -> None:
        self.batch, self.tile = state

    def shrink(self) -> str | None:
        """One step smaller: half the batch, then half the tile in effect (a tile larger than the frame is the
        frame), down to MIN_TILE."""
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch > 1:
            old, self.batch = self.batch, self.batch // 2
            return f"SR batch {old} -> {self.batch}"
        side = min(self.tile or self._input_side, self._input_side or self.tile)  # the tile in effect
        if side // 2 >= MIN_TILE:
            old, self.tile = self.tile, side // 2
            return f"SR tile {old or 'whole frame'} -> {self.tile} px"
        return None

    def super_resolve(self, frame: np.ndarray) -> np.ndarray:
        """The network's native-scale output for one RGB frame (uint8 or uint16), in the same dtype."""
        return self._to_host(self.network([frame])[0], frame.dtype)

    @staticmethod
    def _to_host(image: torch.Tensor, dtype) -> np.ndarray:
        """(3, H, W) in [0, 1] -> HxWx3 codes of `dtype`, rounded and clipped."""
        top = peak(dtype)
        codes = image.float().mul(top).add_(0.5).clamp_(0, top)  # + 0.5 then truncation: rounding, for codes >= 0
        codes = codes.to(torch.uint8) if dtype == np.uint8 else codes.to(torch.int32)
        return codes.permute(1, 2, 0).cpu().numpy().astype(dtype, copy=False)

    # --- finishing a frame ----------------------------------------------------------------------------------

    def passes_through(self, frame: np.ndarray, size: tuple[int, int]) -> bool:
        """At least as large as the target: the network could only add detail to be thrown away."""
        return max(frame.shape[:2]) >= max(size)

    def network_batch(self, frames: list[np.ndarray], size: tuple[int, int]) -> list:
        """The batched part of `upscale` for a run of frames (the network); None for frames that skip it."""
        todo = [f for f in frames if not self.passes_through(f, size)]
        done = iter(self.network(todo)) if todo else iter(())
        return [None if self.passes_through(f, size) else next(done) for f in frames]

    def upscale(
        self,
        frame: np.ndarray,
        size: tuple[int, int],
        prior: "TemporalPrior | None" = None,
        network: torch.Tensor | None = None,
    ) -> EngineOutput:
        """`network`: this frame's share of `network_batch`, when the run was batched."""
        started = time.perf_counter()
        if self.passes_through(frame, size):
            out = resize_rgb(frame, *size)
            stages = [StageOutput("resize (input >= target)", out, time.perf_counter() - started)]
            return EngineOutput(out, None, lambda: stages)
        sr = network if network is not None else self.network([frame])[0]
        network_done = time.perf_counter()
        finish = self._finish_tensors if self.tensor_path else self._finish_arrays
        return finish(frame, sr, size, prior, started, network_done)

    def _finish_arrays(self, frame, sr, size, prior, started, network_done) -> EngineOutput:
        sr = self._to_host(sr, frame.dtype)
        out = resize_rgb(sr, *size)
        resized = time.perf_counter()
        stages = [
            StageOutput(f"{self.model_name} x{self.scale}", sr, network_done - started),
            StageOutput("resized to target", out, resized - network_done),
        ]
        if self.color_anchor:
            # Colour and shading below the anchor scale come from the input itself, detail from the network.
            out = anchor_to_input(out, frame, self.color_anchor_sigma)
            anchored = time.perf_counter()
            stages.append(StageOutput("colour anchored to input", out, anchored - resized))
            resized = anchored
        if prior is not None and self.history.active:
            out = self.history.apply(out, prior, size[0] / frame.shape[1])
            stages.append(StageOutput("temporal blend", out, time.perf_counter() - resized))
        return EngineOutput(out, None, lambda: stages)

    @torch.inference_mode()
    def _finish_tensors(self, frame, sr, size, prior, started, network_done) -> EngineOutput:
        """The same steps on the device, rounding to the frame's codes where the array path does."""
        top, device = peak(frame.dtype), sr.device
        quantise = lambda t: (t * top).round_().clamp_(0, top) / top  # noqa: E731
        sr = quantise(sr.float())
        out = quantise(torch_ops.resize(sr[None], *size))
        stages = [(f"{self.model_name} x{self.scale}", sr, network_done - started)]
        mark = time.perf_counter()
        stages.append(("resized to target", out[0], mark - network_done))
        if self.color_anchor:
            small = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].float() / top
            out = quantise(torch_ops.anchor_to_input(out, small, self.color_anchor_sigma, top))
            stages.append(("colour anchored to input", out[0], time.perf_counter() - mark))
            mark = time.perf_counter()
        if prior is not None and self.history.active:
            previous = prior.carry.device_output if isinstance(prior.carry, SRCarry) else None
            if previous is None or previous.shape[-2:] != out.shape[-2:]:
                previous = (
                    torch.from_numpy(np.ascontiguousarray(prior.previous_output))
                    .to(device)
                    .permute(2, 0, 1)[None]
                    .float()
                    / top
                )
            flow = torch_ops.upsample_flow(prior.flows.cur_to_prev, size[0], size[1], device)
            confidence = torch.from_numpy(prior.flows.confidence).to(device)[None, None]
            scale = size[0] / frame.shape[1]
            out = quantise(self.history.apply_tensors(out, previous, flow, confidence, top, scale))
            stages.append(("temporal blend", out[0], time.perf_counter() - mark))
        dtype = frame.dtype
        return EngineOutput(
            self._to_host(out[0], dtype),
            SRCarry(out),  # the frame stays on the device
            lambda: [StageOutput(name, self._to_host(image, dtype), seconds) for name, image, seconds in stages],
        )
