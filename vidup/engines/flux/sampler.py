"""The sampling loop vidup owns, in the k-diffusion style: small pure functions over an explicit sigma schedule,
with a per-step callback.

Flow matching (FLUX): x_sigma = (1 - sigma) * x_0 + sigma * noise, and the model predicts the velocity
v = noise - x_0, so one Euler step from sigma to sigma_next is x + (sigma_next - sigma) * v.

Propagation is differential diffusion (Levin & Fried 2023): every latent element has a release sigma. While the
schedule is at or above it, the element is pinned to a target (the warped previous result) noised to the current
sigma; below it, the element evolves freely. Untrusted elements are never pinned and follow the keyframe's path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, sigma) -> velocity


def noise_to(clean: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """The forward process at `sigma` (the same arithmetic as diffusers' `scale_noise`)."""
    return sigma * noise + (1.0 - sigma) * clean


@dataclass
class Pin:
    """Differential-diffusion hold: `target` (clean latents) noised with `noise`, wherever sigma >= `release`."""

    target: torch.Tensor
    noise: torch.Tensor
    release: torch.Tensor  # per element; +inf where the element is never held

    def held(self, sigma) -> torch.Tensor:
        return self.release <= float(sigma) + 1e-6

    def __call__(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return torch.where(self.held(sigma), noise_to(self.target, self.noise, sigma).to(x.dtype), x)


@dataclass
class Step:
    """What the per-step callback sees."""

    index: int
    sigma: float
    sigma_next: float
    x: torch.Tensor  # after the step (and the pin)
    velocity: torch.Tensor


def start(clean: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor, pin: Pin | None = None) -> torch.Tensor:
    """x at the schedule's first sigma: the clean latents noised, held elements taken from the pin's target."""
    sigma = sigmas[0]
    if pin is not None:
        clean = torch.where(pin.held(sigma), pin.target, clean)
    return noise_to(clean, noise, sigma)


def sample_euler(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    pin: Pin | None = None,
    callback: Callable[[Step], None] | None = None,
) -> torch.Tensor:
    """Integrate from sigmas[0] to sigmas[-1] with Euler steps. The state stays in float32 whatever the model's
    precision (diffusers rounds it to the model dtype after every step). `sigmas` (on the host) are uploaded once:
    a host tensor moved to the GPU inside the loop would make the host wait for the queue at every step."""
    x = x.float()
    on_device = sigmas.to(x.device, torch.float32)
    for i in range(len(sigmas) - 1):
        velocity = denoise(x, on_device[i])
        x = x + (on_device[i + 1] - on_device[i]) * velocity.float()
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])  # host values: no device read
        if pin is not None:
            x = pin(x, sigma_next)
        if callback is not None:
            callback(Step(i, sigma, sigma_next, x, velocity))
    return x
