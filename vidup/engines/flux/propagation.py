"""Propagation: how a FLUX frame inherits from the previous one of its shot. Differential diffusion pins trusted
latents to the warped previous result (per latent cell, released between the keyframe's sigma and the hand-off),
the noise is transported with the flow, and a frame the flow explains too little of runs as a keyframe."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from vidup.config import PropagationConfig
from vidup.engines.flux import latents as lat
from vidup.engines.flux.noise import TransportedNoise, fresh_noise, keyframe_noise
from vidup.engines.flux.sampler import Pin
from vidup.engines.flux.schedule import Plan, Schedules
from vidup.steps import start_index
from vidup.temporal.flow import consistent_flow, upsample_flow

if TYPE_CHECKING:
    from vidup.temporal.state import TemporalPrior

STAGES = ("stage1", "stage2")
FULLY_TRUSTED = 1 - 1e-3  # confidence at or above this counts as fully trusted (feathering leaves 0.9999...)


@dataclass
class FluxCarry:
    """What a FLUX frame hands the next frame of its shot: its stage-1 result (at the target size), the noise
    fields transported with the flow, and how many propagated frames came since the keyframe."""

    stage1: np.ndarray
    noise: dict[str, TransportedNoise]
    since_key: int


class Propagator:
    """Decides and prepares propagated frames for one engine: its schedules, `[temporal.flux]`, the seed, and
    whether temporal coherence is on at all."""

    def __init__(self, schedules: Schedules, settings: PropagationConfig, seed: int, enabled: bool = True):
        self.schedules = schedules
        self.settings = settings
        self.seed = seed
        self.enabled = enabled

    def plan(
        self,
        steps: int,
        strength: float,
        hand_off_strength: float,
        confidence: np.ndarray,
        target: torch.Tensor,
        noise: torch.Tensor,
    ) -> tuple[Plan, Pin]:
        """Differential diffusion from a confidence map at latent resolution: fully trusted elements are held on
        the noised `target` down to the hand-off sigma, untrusted ones (below temporal.flux.min_cell_trust) are
        never held (they start from the current frame at the keyframe's sigma), partly trusted ones are released
        in between."""
        h, w = target.shape[-2:]
        trust = np.clip(confidence, 0.0, 1.0)
        trust[trust >= FULLY_TRUSTED] = 1.0
        trust[trust < self.settings.min_cell_trust] = 0.0
        hand_off_strength = min(hand_off_strength, strength)
        seq_len = (h // 2) * (w // 2)
        plan = self.schedules.propagated(
            steps,
            strength,
            hand_off_strength,
            seq_len,
            new_content=bool((trust < 1).any()),
            new_content_steps=self.settings.new_content_steps,
        )
        full = self.schedules.full(steps, seq_len)
        sigma_key = float(full[start_index(steps, strength)])
        release = sigma_key - trust * (sigma_key - plan.hand_off)
        release[trust <= 0] = np.inf
        release_map = torch.from_numpy(release.astype(np.float32))[None, None].expand(1, target.shape[1], h, w)
        device = target.device
        pin = Pin(
            target=lat.pack(target.float()),
            noise=lat.pack(noise.to(device, torch.float32)),
            release=lat.pack(release_map.contiguous()).to(device),
        )
        return plan, pin

    def is_propagated(self, prior: "TemporalPrior | None") -> bool:
        settings = self.settings
        if prior is None or not self.enabled or not isinstance(prior.carry, FluxCarry):
            return False
        if settings.keyframe_interval and prior.index_in_shot % settings.keyframe_interval == 0:
            return False
        # One frame that the previous explains too little of (a missed cut, a flash) starts over.
        return prior.flows.trusted_fraction >= settings.min_trusted

    def noise(self, shape, prior: "TemporalPrior | None", propagated: bool) -> tuple[dict, dict, int]:
        """Per-stage noise for this frame, the transported fields to carry on, and propagated frames since the
        last keyframe."""
        seed, mode = self.seed, self.settings.noise
        if not propagated or mode == "fixed":
            noises = {stage: keyframe_noise(shape, seed, i) for i, stage in enumerate(STAGES)}
            return noises, {stage: TransportedNoise.start(n) for stage, n in noises.items()}, 0
        since = prior.carry.since_key + 1
        h, w = shape[-2:]
        flow = upsample_flow(prior.flows.prev_to_cur, w, h)
        visible = consistent_flow(prior.flows.prev_to_cur, prior.flows.cur_to_prev).astype(np.float32)
        valid = cv2.resize(visible, (w, h), interpolation=cv2.INTER_AREA) > 0.5
        fields = {
            stage: prior.carry.noise[stage].advance(flow, valid, fresh_noise(shape, seed, i, since))
            for i, stage in enumerate(STAGES)
        }
        return {stage: f.noise for stage, f in fields.items()}, fields, since

    @staticmethod
    def latent_confidence(prior: "TemporalPrior", h: int, w: int) -> np.ndarray:
        return cv2.resize(prior.flows.confidence.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
