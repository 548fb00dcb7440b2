"""How a warped prior enters an engine's output. Small pure functions with one uniform shape:
`(current, prior-derived arrays, settings) -> array`.

- SR engine: take the warped previous output's high frequencies where the flow is trusted (frame-recurrent
  super-resolution, training-free). Low frequencies always come from the current frame, so a wrong warp can
  only move fine texture, never a player's silhouette: no ghosts.
- FLUX engine: start denoising from a mask blend, in latent space, of the warped previous result and the
  current resized input, noised to a lower strength; anchor colours to the input afterwards.
"""

from __future__ import annotations

import cv2
import numpy as np


def high_frequencies(image: np.ndarray, sigma: float) -> np.ndarray:
    """image minus its Gaussian blur: detail finer than `sigma`, float32."""
    image = np.asarray(image, np.float32)
    return image - cv2.GaussianBlur(image, (0, 0), sigma)


def blend_high_frequencies(current: np.ndarray, warped_previous: np.ndarray, confidence: np.ndarray,
                           strength: float, sigma: float) -> np.ndarray:
    """current + strength * confidence * highpass(warped_previous - current), uint8 in and out."""
    c = current.astype(np.float32)
    difference = warped_previous.astype(np.float32) - c
    out = c + (strength * confidence)[..., None] * high_frequencies(difference, sigma)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --- FLUX latent seeding ------------------------------------------------------------------------------------


def denoising_steps(steps: int, strength: float) -> int:
    """How many steps a diffusers img2img pipeline runs for (steps, strength) (its `get_timesteps`)."""
    return steps - int(max(steps - steps * strength, 0))


def start_timestep(pipe, steps: int, strength: float, height: int, width: int, device):
    """The first timestep an img2img FLUX pipeline runs for (steps, strength), exactly as the pipeline computes
    it (flow-matching sigmas with the resolution-dependent shift). Returns (timestep tensor, steps to run)."""
    from diffusers.pipelines.flux.pipeline_flux_img2img import calculate_shift, retrieve_timesteps

    sigmas = np.linspace(1.0, 1 / steps, steps)
    seq_len = (height // pipe.vae_scale_factor // 2) * (width // pipe.vae_scale_factor // 2)
    config = pipe.scheduler.config
    mu = calculate_shift(seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    _, n = retrieve_timesteps(pipe.scheduler, steps, device, sigmas=sigmas, mu=mu)
    timesteps, n = pipe.get_timesteps(n, strength, device)
    return timesteps[:1], n


def encode_image(pipe, rgb: np.ndarray, generator):
    """VAE latents of an RGB uint8 image, normalised as the pipelines use them: (z - shift) * scale."""
    from PIL import Image

    h, w = rgb.shape[:2]
    image = pipe.image_processor.preprocess(Image.fromarray(rgb), height=h, width=w)
    image = image.to(device=pipe._execution_device, dtype=pipe.vae.dtype)
    return pipe._encode_vae_image(image=image, generator=generator)


def latent_mask(confidence: np.ndarray, latents):
    """The confidence mask at latent resolution, as a (1, 1, h, w) tensor."""
    import torch

    h, w = latents.shape[-2:]
    small = cv2.resize(confidence.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(small)[None, None].to(latents.device, latents.dtype)


def blend_latents(previous, current, mask):
    """Trust the warped previous result where the flow is confident, the current input elsewhere."""
    return mask * previous + (1 - mask) * current


def noised_packed_latents(pipe, start, noise, timestep):
    """Noise `start` to `timestep` with `noise` and pack 2x2, ready for a pipeline's `latents=`."""
    b, c, h, w = start.shape
    noised = pipe.scheduler.scale_noise(start, timestep.to(start.device), noise.to(start.device, start.dtype))
    return pipe._pack_latents(noised, b, c, h, w)


def warp_noise(noise, flow: np.ndarray, confidence: np.ndarray, fresh):
    """Carry the previous frame's noise along the flow (so noise-born detail moves with the scene), with fresh
    noise where the flow is not trusted; mixed as m*a + sqrt(1-m^2)*b, which keeps unit variance."""
    import torch

    from vidup.temporal.flow import upsample_flow, warp

    _, c, h, w = noise.shape
    small_flow = upsample_flow(flow, w, h)
    moved = np.stack([warp(noise[0, i].float().cpu().numpy(), small_flow) for i in range(c)])[None]
    moved = torch.from_numpy(moved).to(noise.device, noise.dtype)
    moved = (moved - moved.mean(dim=(2, 3), keepdim=True)) / moved.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    m = latent_mask(confidence, noise)
    return m * moved + torch.sqrt((1 - m**2).clamp_min(0)) * fresh


# --- colour and low-frequency anchoring ---------------------------------------------------------------------


def wavelet_color_fix(output: np.ndarray, reference: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    """Low frequencies (colour, shading) from the reference, high frequencies (detail) from the output."""
    fixed = high_frequencies(output, sigma) + cv2.GaussianBlur(reference.astype(np.float32), (0, 0), sigma)
    return np.clip(fixed + 0.5, 0, 255).astype(np.uint8)


def adain_color_fix(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-channel mean and spread of the reference (AdaIN)."""
    out, ref = output.astype(np.float32), reference.astype(np.float32)
    mean_o, std_o = out.mean((0, 1)), out.std((0, 1)) + 1e-5
    fixed = (out - mean_o) / std_o * ref.std((0, 1)) + ref.mean((0, 1))
    return np.clip(fixed + 0.5, 0, 255).astype(np.uint8)


COLOR_FIXES = {"wavelet": wavelet_color_fix, "adain": adain_color_fix, "none": lambda output, reference: output}
