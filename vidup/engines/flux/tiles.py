"""Denoising frames larger than FLUX's comfort zone in overlapping latent tiles, blended at every step.

Following MultiDiffusion (Bar-Tal et al. 2023) and Mixture of Diffusers (Jimenez 2023): the latents stay whole; at
each step every tile's velocity is predicted on its own slice (with its slice of the control latents) and the
predictions are averaged with weights that cross-fade linearly over `overlap` cells in the middle of each overlap.
The weights of two neighbours sum to one, so a tile's prediction fades into its neighbour's: there is no seam, and
the Euler step, the differential-diffusion pin and the transported noise all act on the whole frame as before.

Each tile sees positions 0..tile (its own RoPE frame), the size FLUX was trained at, and every tile has the same
size, so one conditioning and one compiled graph serve them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from vidup.engines.flux import latents as lat


@dataclass(frozen=True)
class Tile:
    """A tile in latent cells, and its blending weight (1, 1, h, w)."""

    y: int
    x: int
    h: int
    w: int
    weight: torch.Tensor

    @property
    def window(self) -> tuple[slice, slice, slice, slice]:
        return slice(None), slice(None), slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of equal tiles covering `length` with at least `overlap` in common between neighbours, spread evenly,
    at even positions (the 2x2 token patches of neighbours line up)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [2 * round(i * (length - tile) / (count - 1) / 2) for i in range(count)]


def _ramps(starts: list[int], size: int, overlap: int) -> list[torch.Tensor]:
    """Per tile along one axis: 1 where it leads, 0 where a neighbour leads, and a linear crossfade of `overlap`
    cells (at most the actual overlap) centred in each overlap: (k + 1) / (n + 1) up, its mirror down, so the
    weights of two neighbours sum to one."""

    def crossfade(left: int) -> tuple[int, int]:  # (global start, length) between tiles left and left + 1
        shared = starts[left] + size - starts[left + 1]
        n = min(overlap, shared)
        return starts[left + 1] + (shared - n) // 2, n

    ramps = []
    for i, s in enumerate(starts):
        w = torch.ones(size)
        if i > 0:
            at, n = crossfade(i - 1)
            at -= s
            w[:at] = 0
            w[at : at + n] = torch.arange(1, n + 1) / (n + 1)
        if i + 1 < len(starts):
            at, n = crossfade(i)
            at -= s
            w[at : at + n] = torch.minimum(w[at : at + n], torch.arange(n, 0, -1) / (n + 1))
            w[at + n :] = 0
        ramps.append(w)
    return ramps


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Tiles over a (height, width) latent, `tile` and `overlap` in latent cells (even numbers)."""
    th, tw = min(tile, height), min(tile, width)
    ys, xs = axis_starts(height, th, overlap), axis_starts(width, tw, overlap)
    wy, wx = _ramps(ys, th, overlap), _ramps(xs, tw, overlap)
    return [
        Tile(y, x, th, tw, (ry[:, None] * rx[None, :])[None, None]) for y, ry in zip(ys, wy) for x, rx in zip(xs, wx)
    ]


def needs_tiles(width: int, height: int, max_megapixels: float) -> bool:
    """Whether a frame of (width, height) working pixels is denoised in tiles."""
    return width * height > max_megapixels * 1e6


def model_calls_per_step(
    width: int, height: int, max_megapixels: float, tile_px: int, overlap_px: int, scale: int = 8
) -> int:
    """Transformer calls one step costs at a working size: 1 whole, else the tile count."""
    if not needs_tiles(width, height, max_megapixels):
        return 1
    return len(plan_tiles(height // scale, width // scale, tile_px // scale, overlap_px // scale))


VelocityFactory = Callable[[Tile], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def tiled_velocity(tiles: list[Tile], height: int, width: int, velocity_for: VelocityFactory, region) -> Callable:
    """velocity(x, sigma) over packed whole-frame latents: each tile's prediction from `velocity_for(tile)`, made
    inside `region(index)` (a cache keeps per-tile state), blended by the tiles' weights."""
    denoisers = [velocity_for(t) for t in tiles]
    on_device: dict = {}  # the weights, uploaded once per run: a host tensor moved every step would stall the host

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        whole = lat.unpack(x, height, width)
        if x.device not in on_device:
            on_device[x.device] = [tile.weight.to(x.device) for tile in tiles]
        out = torch.zeros_like(whole, dtype=torch.float32)
        total = torch.zeros_like(whole[:, :1], dtype=torch.float32)
        for i, (tile, denoise, weight) in enumerate(zip(tiles, denoisers, on_device[x.device])):
            with region(i):
                v = denoise(lat.pack(whole[tile.window].contiguous()), sigma)
            out[tile.window] += lat.unpack(v.float(), tile.h, tile.w) * weight
            total[tile.window] += weight
        return lat.pack(out / total)

    return velocity
