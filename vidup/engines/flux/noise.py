"""Diffusion noise across frames that stays white Gaussian noise.

Bilinear warping and renormalising noise (what vidup did before) averages neighbours: after a few frames of a
sub-pixel pan, neighbouring values correlate and a flow model reads the correlated noise as signal. Here noise is
*transported*: every latent pixel's sample travels with the scene along the accumulated (sub-pixel) flow, landing
in the nearest cell; where two samples collide only the nearer one stays, and cells that nothing reaches
(disocclusions, the frame's edge, occluded sources) draw fresh samples. Every value is always one untouched
N(0, 1) draw, no two cells share one, so the field stays white with unit variance, however long the shot.

`fixed` mode keeps the keyframe's noise on screen for every frame instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def keyframe_noise(shape: tuple[int, ...], seed: int, stream: int) -> torch.Tensor:
    """The noise a keyframe starts from: a function of the seed and the stage only."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + stream)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


@dataclass
class TransportedNoise:
    """One noise field (1, C, h, w) and the sub-pixel offset of each cell's sample from the cell's centre."""

    noise: torch.Tensor
    offset: np.ndarray  # (h, w, 2): where the sample truly sits, relative to its cell (|offset| <= 0.5)

    @classmethod
    def start(cls, noise: torch.Tensor) -> "TransportedNoise":
        h, w = noise.shape[-2:]
        return cls(noise, np.zeros((h, w, 2), np.float32))

    def advance(self, flow_prev_to_cur: np.ndarray, valid: np.ndarray, fresh: torch.Tensor) -> "TransportedNoise":
        """The field of the next frame. `flow_prev_to_cur` (h, w, 2) in latent pixels, at this field's cells;
        `valid` (h, w) marks cells whose content is still visible in the next frame; `fresh` is new N(0, 1) noise
        of the same shape as the field, used where no sample arrives."""
        h, w = self.offset.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        tx = xs + self.offset[..., 0] + flow_prev_to_cur[..., 0]
        ty = ys + self.offset[..., 1] + flow_prev_to_cur[..., 1]
        cx, cy = np.rint(tx).astype(np.int64), np.rint(ty).astype(np.int64)
        inside = valid & (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
        source = np.flatnonzero(inside)
        target = cy.ravel()[source] * w + cx.ravel()[source]
        distance = ((tx - cx) ** 2 + (ty - cy) ** 2).ravel()[source]
        order = np.lexsort((distance, target))  # by target cell, nearest sample first
        target, source = target[order], source[order]
        keep = np.ones(len(target), bool)
        keep[1:] = target[1:] != target[:-1]  # collisions: the nearest sample wins, the others vanish
        target, source = target[keep], source[keep]

        channels = self.noise.shape[1]
        old, new = self.noise.reshape(channels, -1), fresh.reshape(channels, -1).clone()
        new[:, torch.from_numpy(target)] = old[:, torch.from_numpy(source)]
        offset = np.zeros((h * w, 2), np.float32)
        offset[target, 0] = (tx.ravel() - cx.ravel())[source]
        offset[target, 1] = (ty.ravel() - cy.ravel())[source]
        return TransportedNoise(new.reshape(self.noise.shape), offset.reshape(h, w, 2))


def fresh_noise(shape: tuple[int, ...], seed: int, stream: int, frame: int) -> torch.Tensor:
    """Noise for the cells nothing reaches on the `frame`-th propagated frame since the keyframe."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + stream) * 100_003 + frame + 1)
    return torch.randn(shape, generator=generator, dtype=torch.float32)
