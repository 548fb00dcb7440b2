"""What the FLUX transformer takes besides the latents (prompt embeddings, position ids, guidance), and the model
called as the pipelines call it: one velocity function for inference and LoRA training alike."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidup.engines.flux import latents as lat


@dataclass
class Conditioning:
    """Everything a denoising step needs besides the latents and sigma, for one output size."""

    tokens: torch.Tensor
    pooled: torch.Tensor
    txt_ids: torch.Tensor
    img_ids: torch.Tensor
    guidance: torch.Tensor | None
    control_guidance: torch.Tensor | None = None  # the ControlNet's, where it embeds guidance and the base does not


def make_conditioning(
    tokens: torch.Tensor,
    pooled: torch.Tensor,
    latent_h: int,
    latent_w: int,
    device,
    dtype,
    guidance: float | None,
    batch: int = 1,
    control_guidance: float | None = None,
) -> Conditioning:
    """What the transformer takes besides the latents: prompt embeddings, position ids, the guidance value (for
    guidance-distilled models, None otherwise; FLUX.1-schnell embeds none, while the ControlNet upscaler, trained on
    FLUX.1-dev, still takes one)."""
    tokens = tokens.to(device, dtype)
    as_tensor = lambda value: None if value is None else torch.full([batch], value, device=device, dtype=torch.float32)  # noqa: E731
    return Conditioning(
        tokens=tokens,
        pooled=pooled.to(device, dtype),
        txt_ids=torch.zeros(tokens.shape[1], 3, device=device, dtype=dtype),
        img_ids=lat.image_ids(latent_h, latent_w, device, dtype),
        guidance=as_tensor(guidance),
        control_guidance=as_tensor(control_guidance),
    )


def flux_velocity(
    transformer, controlnet, cond: Conditioning, control: torch.Tensor | None = None, conditioning_scale: float = 1.0
):
    """velocity(x, sigma): the FLUX transformer (with the ControlNet's residuals when `control` is given) as the
    pipelines call it. Inference and LoRA training both call the model through here."""
    dtype = transformer.dtype
    scale = conditioning_scale
    control_guidance = None
    if controlnet is not None and controlnet.config.guidance_embeds:
        control_guidance = cond.control_guidance if cond.control_guidance is not None else cond.guidance

    def velocity(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        hidden = x.to(dtype)
        timestep = (sigma * 1000).expand(x.shape[0]).to(x.device, dtype) / 1000  # as the pipelines round it
        common = dict(
            timestep=timestep,
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.tokens,
            txt_ids=cond.txt_ids,
            img_ids=cond.img_ids,
            return_dict=False,
        )
        residuals = {}
        if control is not None:
            blocks, singles = controlnet(
                hidden_states=hidden,
                controlnet_cond=control,
                controlnet_mode=None,
                conditioning_scale=scale,
                guidance=control_guidance,
                **common,
            )
            residuals = dict(
                controlnet_block_samples=blocks, controlnet_single_block_samples=singles, controlnet_blocks_repeat=False
            )
        return transformer(hidden_states=hidden, guidance=cond.guidance, **common, **residuals)[0]

    return velocity
