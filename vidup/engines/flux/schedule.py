"""FLUX's flow-matching sigma schedules, made explicit.

A schedule is a float32 tensor of sigmas from the first noise level down to 0 (one more entry than steps). The
resolution-dependent shift is diffusers' own (`calculate_shift` and the scheduler's `set_timesteps`), so a
keyframe's schedule is the one `FluxImg2ImgPipeline` runs; the slicing by strength is the pipelines' rule.

One difference above about 1 MP: diffusers lets the shift `mu` grow linearly with the token count past the
scheduler's `max_image_seq_len` (4096 tokens, 1024x1024), so a strength means ever more noise: 0.75 starts at sigma
0.875 at 1024x576, 0.950 at 1920x1088 and 0.9991 at 3840x2160, where the input is all but thrown away. vidup caps
the token count at `max_image_seq_len` (`flux.resolution_shift = "capped"`), so a strength and a hand-off start at
the same sigmas at 1080p and 2160p as at 1 MP. At and below 1 MP the schedules equal the stock pipelines'.
`"linear"` restores diffusers' rule. Schedulers without dynamic shifting (FLUX.1-schnell) use their fixed shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import math

import numpy as np
import torch

from vidup.steps import start_index


def image_seq_len(height: int, width: int, vae_scale_factor: int = 8) -> int:
    """Tokens of a (height, width) image: latents of 1/8 the size, packed 2x2."""
    return (height // vae_scale_factor // 2) * (width // vae_scale_factor // 2)


@dataclass(frozen=True)
class Plan:
    """One stage's schedule for one frame: the sigmas it runs and, on propagated frames, the hand-off sigma."""

    sigmas: torch.Tensor  # float32, first noise level ... 0
    hand_off: float | None = None  # trusted content is pinned down to this sigma (None: keyframe, nothing pinned)

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1


class Schedules:
    """Schedules for one model: built from its scheduler config, cached per (steps, resolution)."""

    def __init__(self, scheduler_config: dict, resolution_shift: str = "capped"):
        self.scheduler_config = dict(scheduler_config)
        self.resolution_shift = resolution_shift
        self.dynamic = bool(self.scheduler_config.get("use_dynamic_shifting", False))
        self._full = lru_cache(maxsize=16)(self._compute_full)

    def shift_tokens(self, seq_len: int) -> int:
        """The token count the shift is computed for: capped at the scheduler's `max_image_seq_len` (see above)."""
        if self.resolution_shift == "capped":
            return min(seq_len, int(self.scheduler_config.get("max_image_seq_len", 4096)))
        return seq_len

    def mu(self, seq_len: int) -> float:
        """The resolution-dependent shift (diffusers' `calculate_shift` on this model's scheduler config)."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        config = self.scheduler_config
        return float(
            calculate_shift(
                self.shift_tokens(seq_len),
                config.get("base_image_seq_len", 256),
                config.get("max_image_seq_len", 4096),
                config.get("base_shift", 0.5),
                config.get("max_shift", 1.15),
            )
        )

    def _compute_full(self, steps: int, seq_len: int) -> torch.Tensor:
        from diffusers import FlowMatchEulerDiscreteScheduler

        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        mu = self.mu(seq_len) if self.dynamic else None
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
        return scheduler.sigmas.to(torch.float32).cpu()

    def shift(self, t: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Training timesteps t in (0, 1) shifted as inference shifts its sigmas at this resolution (the
        scheduler's exponential time shift, sigma = e^mu / (e^mu + 1/t - 1); or its fixed shift s,
        sigma = s t / (1 + (s - 1) t), without dynamic shifting). One definition for both."""
        if not self.dynamic:
            s = float(self.scheduler_config.get("shift", 1.0))
            return s * t / (1 + (s - 1) * t)
        m = math.exp(self.mu(seq_len))
        return m / (m + (1 / t - 1))

    def full(self, steps: int, seq_len: int) -> torch.Tensor:
        """All `steps` sigmas of a text-to-image run, then 0 (steps + 1 values)."""
        return self._full(steps, seq_len)

    def keyframe(self, steps: int, strength: float, seq_len: int) -> Plan:
        """The schedule an img2img pipeline runs for (steps, strength)."""
        return Plan(self.full(steps, seq_len)[start_index(steps, strength) :])

    def propagated(
        self,
        steps: int,
        strength: float,
        hand_off_strength: float,
        seq_len: int,
        new_content: bool,
        new_content_steps: int,
    ) -> Plan:
        """The cheapest schedule that still restores new content fully.

        Trusted content needs only the steps below the hand-off; new content (disocclusions, players entering) must
        start at the keyframe's noise level. Where there is new content, the stretch from the keyframe's sigma down to
        the hand-off is crossed in `new_content_steps` even steps (high-noise steps settle layout, not detail, so few
        suffice), then the keyframe's own steps continue below the hand-off. Without new content the run starts at
        the hand-off."""
        full = self.full(steps, seq_len)
        first = start_index(steps, strength)
        hand = max(start_index(steps, hand_off_strength), first)
        if not new_content or hand == first:
            return Plan(full[hand:], float(full[hand]))
        if hand - first <= new_content_steps:
            return Plan(full[first:], float(full[hand]))
        high = torch.linspace(float(full[first]), float(full[hand]), new_content_steps + 1, dtype=torch.float32)
        return Plan(torch.cat([high[:-1], full[hand:]]), float(full[hand]))
