"""Images to FLUX latents and back: the VAE (with its shift and scale), 2x2 packing into tokens, position ids.

These are the pipelines' conventions, written out so the engine calls no private pipeline method:
images are [-1, 1], latents are (z - shift_factor) * scaling_factor, tokens are 2x2 patches of the latents.
"""

from __future__ import annotations

import numpy as np
import torch


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, 4C): 2x2 patches as tokens."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H/2 * W/2, 4C) -> (B, C, H, W), `height` and `width` in latent pixels."""
    b, _, channels = tokens.shape
    x = tokens.view(b, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, channels // 4, height, width)


def image_ids(height: int, width: int, device, dtype) -> torch.Tensor:
    """RoPE positions of the tokens of a (height, width) latent: (row, column) of each 2x2 patch."""
    ids = torch.zeros(height // 2, width // 2, 3)
    ids[..., 1] += torch.arange(height // 2)[:, None]
    ids[..., 2] += torch.arange(width // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def to_tensor(image: np.ndarray, device, dtype) -> torch.Tensor:
    """HxWx3 RGB (uint8, uint16 or float in [0, 1]) -> (1, 3, H, W) in [-1, 1]."""
    if image.dtype == np.uint8:
        x = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        x = image.astype(np.float32) / 65535.0
    else:
        x = image.astype(np.float32, copy=False)
    x = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None]
    return (2.0 * x - 1.0).to(device=device, dtype=dtype)


def to_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> HxWx3 float32 in [0, 1] (the pipelines' postprocess)."""
    return (x / 2 + 0.5).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()


class VaeCodec:
    """The VAE as the engine uses it. Encodes take the posterior mean, so they draw no random numbers and stay
    independent of the diffusion noise. `encodes` counts images encoded (one per image per frame is the budget)."""

    def __init__(self, vae):
        self.vae = vae
        self.shift = float(vae.config.shift_factor or 0.0)
        self.scale = float(vae.config.scaling_factor)
        self.scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.encodes = 0
        self.decodes = 0

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    def encode(self, image: np.ndarray, generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised latents (1, C, H/8, W/8) of an image; a sample of the posterior when a generator is given."""
        pixels = to_tensor(image, self.device, self.vae.dtype)
        posterior = self.vae.encode(pixels).latent_dist
        z = posterior.sample(generator) if generator is not None else posterior.mode()
        self.encodes += 1
        return (z - self.shift) * self.scale

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """HxWx3 float32 in [0, 1] from normalised latents (1, C, h, w)."""
        z = latents / self.scale + self.shift
        self.decodes += 1
        return to_image(self.vae.decode(z.to(self.device, self.vae.dtype), return_dict=False)[0])
