"""The two-stage FLUX upscaler (Multi-Stage Generative Upscaler, arXiv 2503.11181), on diffusers.

    stage 0  the input resized to the target (Lanczos, the paper; or the SR engine as a pre-upscaler)
    stage 1  FluxImg2ImgPipeline at strength ~0.75 rebuilds structure from the degraded frame
    stage 2  FluxControlNetImg2ImgPipeline with the ControlNet upscaler, conditioned on and started from the
             stage-1 result, restores texture (conditioning scale 0.5-0.65)

Both pipelines share one transformer, VAE and pair of text encoders; the prompt is encoded once per clip.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from vidup.device import Placement, choose_placement
from vidup.engines.base import StageOutput
from vidup.engines.flux_weights import BASE_PARTS, CONTROLNET_PARTS, resolve_lora, resolve_model_dir
from vidup.errors import ConfigError, ModelFormatError
from vidup.sizing import SIZE_MULTIPLE, resize_rgb
from vidup.temporal.seeding import (COLOR_FIXES, blend_latents, encode_image, latent_mask, noised_packed_latents,
                                    start_timestep, warp_noise)

if TYPE_CHECKING:
    from vidup.config import FluxConfig, VidupConfig
    from vidup.temporal.state import TemporalPrior

log = logging.getLogger(__name__)


@dataclass
class PromptEmbeddings:
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images[0], 0, 1) * 255.0).round().astype(np.uint8)


class FluxEngine:
    name = "flux"

    def __init__(self, config: "VidupConfig"):
        self.config = config
        self.flux: "FluxConfig" = config.flux
        # bf16 on accelerators; float32 on CPU, where bf16 diffusion is slow and loses detail.
        self.placement: Placement = choose_placement(config.device, config.precision, cpu_bf16=False)
        self._stages: list[StageOutput] = []
        self._embeddings: PromptEmbeddings | None = None
        self.prompt_encodings = 0  # how many times the text encoders ran (once per clip)
        self.steps_run = {"stage1": 0, "stage2": 0}
        self._pre_upscaler = None
        self._extras: dict = {}
        self.last_frame: dict = {}
        self._load()

    # --- loading -------------------------------------------------------------------------------------------

    def _load(self) -> None:
        flux = self.flux
        # Resolve every component before loading any, so a missing one fails fast and names itself.
        base_dir = resolve_model_dir(flux.model, "FLUX base model", "--flux-model", BASE_PARTS, flux.allow_download)
        controlnet_dir = resolve_model_dir(flux.controlnet, "FLUX ControlNet upscaler", "--controlnet",
                                           CONTROLNET_PARTS, flux.allow_download)
        loras = [resolve_lora(spec, flux.allow_download) for spec in flux.loras]

        from diffusers import FluxControlNetImg2ImgPipeline, FluxControlNetModel, FluxImg2ImgPipeline

        dtype = self.placement.dtype
        self.stage1 = FluxImg2ImgPipeline.from_pretrained(base_dir, dtype=dtype, local_files_only=True)
        controlnet = FluxControlNetModel.from_pretrained(controlnet_dir, dtype=dtype, local_files_only=True)
        self.stage2 = FluxControlNetImg2ImgPipeline.from_pipe(self.stage1, controlnet=controlnet)
        for tokenizer in (self.stage1.tokenizer, self.stage1.tokenizer_2):
            if tokenizer is None or len(tokenizer) < 3:
                raise ModelFormatError(f"{base_dir}: a tokenizer loaded empty; the folder is incomplete")
        for pipe in (self.stage1, self.stage2):
            pipe.set_progress_bar_config(disable=True)

        if loras:
            names = []
            for i, (path, _) in enumerate(loras):
                name = f"lora{i}"
                self.stage1.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
                names.append(name)
            self.stage1.set_adapters(names, adapter_weights=[scale for _, scale in loras])
        self._place()
        if self.flux.vae_tiling:
            self.stage1.vae.enable_tiling()
        self._enable_cache()
        if self.flux.compile:
            self.stage1.transformer.compile(fullgraph=False, dynamic=False)
        if self.flux.init == "sr":
            from vidup.engines.sr import SREngine

            self._pre_upscaler = SREngine.from_config(self.config)

    def _place(self) -> None:
        device, mode = self.placement.device, self.flux.offload
        if device.type == "cpu" or mode == "none":
            if device.type == "cpu" and mode != "none":
                log.info("offload '%s' has no effect on CPU; models stay in RAM", mode)
            self.stage2.to(device)  # stage 2 holds every component, the shared ones included
            return
        # Hooks go on stage 2: it holds every module (stage 1's are shared), so one chain covers both.
        if mode == "model":
            self.stage2.enable_model_cpu_offload(device=device)
        elif mode == "sequential":
            self.stage2.enable_sequential_cpu_offload(device=device)
        elif mode == "group":
            from diffusers.hooks import apply_group_offloading

            for component in (self.stage2.transformer, self.stage2.controlnet, self.stage2.vae,
                              self.stage2.text_encoder, self.stage2.text_encoder_2):
                apply_group_offloading(component, onload_device=device, offload_device=torch.device("cpu"),
                                       offload_type="leaf_level", use_stream=device.type == "cuda")

    def _enable_cache(self) -> None:
        kind = self.flux.cache
        if kind == "none":
            return
        if kind == "first-block":
            from diffusers.hooks import FirstBlockCacheConfig

            cache = FirstBlockCacheConfig(threshold=self.flux.cache_threshold)
        else:
            from diffusers.hooks import TaylorSeerCacheConfig

            cache = TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3)
        self.stage1.transformer.enable_cache(cache)

    def _cache_context(self, name: str):
        # Only FluxPipeline opens a cache context itself; the img2img pipelines need it from outside.
        if self.flux.cache == "none":
            return contextlib.nullcontext()
        return self.stage1.transformer.cache_context(name)

    # --- per clip ------------------------------------------------------------------------------------------

    def embeddings(self) -> PromptEmbeddings:
        """The prompt, encoded once per clip and reused by every frame and both stages."""
        if self._embeddings is None:
            with torch.inference_mode():
                prompt_embeds, pooled, _ = self.stage1.encode_prompt(
                    prompt=self.flux.prompt, prompt_2=self.flux.prompt, device=self.stage1._execution_device,
                    num_images_per_prompt=1, max_sequence_length=512)
            self.prompt_encodings += 1
            self._embeddings = PromptEmbeddings(prompt_embeds, pooled)
        return self._embeddings

    # --- per frame -----------------------------------------------------------------------------------------

    def check_inputs(self, frame: np.ndarray, size: tuple[int, int]) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ConfigError(f"the flux engine takes HxWx3 uint8 RGB frames, got {frame.shape} {frame.dtype}")
        if size[0] % SIZE_MULTIPLE or size[1] % SIZE_MULTIPLE:
            raise ConfigError(f"flux output sides must be multiples of {SIZE_MULTIPLE} (VAE x8, 2x2 patches), got {size}")

    def _generator(self) -> torch.Generator:
        # The same seed for every frame: the noise is held fixed across frames, which already steadies detail.
        return torch.Generator(device="cpu").manual_seed(self.flux.seed)

    def _counter(self, stage: str):
        def on_step_end(pipe, step, timestep, callback_kwargs):
            self.steps_run[stage] += 1
            return callback_kwargs

        return on_step_end

    def initial_image(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if self._pre_upscaler is not None and max(frame.shape[:2]) < max(size):
            return resize_rgb(self._pre_upscaler.super_resolve(frame), *size)
        return resize_rgb(frame, *size)

    def _noise(self, shape, prior: "TemporalPrior | None", keyframe: bool) -> torch.Tensor:
        """Fixed: the seed's noise every frame. Warped: the previous frame's noise carried along the flow."""
        fresh = torch.randn(shape, generator=self._generator(), dtype=torch.float32)
        previous = None if prior is None else prior.extras.get("noise")
        if self.config.temporal.flux_noise == "fixed" or keyframe or previous is None or previous.shape != fresh.shape:
            return fresh
        # fresh noise must differ between frames where it is used, or occluded areas would repeat themselves
        other = torch.randn(shape, generator=torch.Generator().manual_seed(self.flux.seed + 1 + prior.index_in_shot))
        return warp_noise(previous, prior.flows.cur_to_prev, prior.flows.confidence, other)

    def _run_stage(self, pipe, stage: str, init: np.ndarray, start_rgb_prev: np.ndarray | None,
                   confidence: np.ndarray | None, strength: float, steps: int, noise, common: dict, **extra) -> np.ndarray:
        """One denoising stage started from latents we build: VAE(init), blended with VAE(previous) under the
        mask when a prior exists, noised to `strength` with `noise`."""
        height, width = init.shape[:2]
        device = pipe._execution_device
        start = encode_image(pipe, init, self._generator())
        if start_rgb_prev is not None:
            previous = encode_image(pipe, start_rgb_prev, self._generator())
            start = blend_latents(previous, start, latent_mask(confidence, start))
        timestep, _ = start_timestep(pipe, steps, strength, height, width, device)
        latents = noised_packed_latents(pipe, start, noise, timestep)
        image = Image.fromarray(init)
        with self._cache_context(stage):
            images = pipe(image=image, latents=latents, strength=strength, num_inference_steps=steps,
                          generator=self._generator(), callback_on_step_end=self._counter(stage), **common,
                          **extra).images
        return _to_uint8(images)

    @torch.inference_mode()
    def upscale(self, frame: np.ndarray, size: tuple[int, int], prior: "TemporalPrior | None" = None) -> np.ndarray:
        self.check_inputs(frame, size)
        flux, temporal, (width, height) = self.flux, self.config.temporal, size
        embeds = self.embeddings()
        common = dict(height=height, width=width, guidance_scale=flux.guidance, output_type="np",
                      prompt_embeds=embeds.prompt_embeds, pooled_prompt_embeds=embeds.pooled_prompt_embeds)
        # Propagate unless this is a keyframe: the first of a shot, every Nth, or one the previous frame explains too
        # little of (one img2img strength serves the whole frame, so mostly-new content needs full strength).
        trusted = None if prior is None else prior.flows.trusted_fraction
        propagated = (prior is not None and "stage1" in prior.extras
                      and prior.index_in_shot % temporal.keyframe_interval != 0
                      and trusted >= temporal.flux_min_trusted)
        anchor = COLOR_FIXES[temporal.color_fix if temporal.enabled else "none"]
        latent_shape = (1, self.stage1.vae.config.latent_channels, height // self.stage1.vae_scale_factor,
                        width // self.stage1.vae_scale_factor)
        noise = self._noise(latent_shape, prior, keyframe=not propagated)
        steps_before = dict(self.steps_run)

        # 0. the starting image at the target size
        t0 = time.perf_counter()
        init = self.initial_image(frame, size)
        t1 = time.perf_counter()
        # 1. img2img rebuilds structure; a propagated frame restarts from the warped previous stage-1 result
        s1_strength = min(temporal.flux_strength, flux.strength) if propagated else flux.strength
        stage1 = self._run_stage(self.stage1, "stage1", init,
                                 prior.warp(prior.extras["stage1"]) if propagated else None,
                                 prior.confidence if propagated else None, s1_strength, flux.steps, noise, common)
        stage1 = anchor(stage1, init)
        t2 = time.perf_counter()
        # 2. the ControlNet upscaler refines texture, conditioned on stage 1 and started from it (blended with
        #    the warped previous final output on propagated frames)
        s2_strength = min(temporal.flux_strength, flux.stage2_strength) if propagated else flux.stage2_strength
        final = self._run_stage(self.stage2, "stage2", stage1, prior.warped_output if propagated else None,
                                prior.confidence if propagated else None, s2_strength, flux.stage2_steps, noise,
                                common, control_image=Image.fromarray(stage1),
                                controlnet_conditioning_scale=flux.conditioning_scale)
        final = anchor(final, init)
        t3 = time.perf_counter()
        self.last_frame = {"propagated": propagated, "trusted": trusted,
                           "steps": sum(self.steps_run.values()) - sum(steps_before.values())}
        self._extras = {"stage1": stage1, "noise": noise}
        self._stages = [
            StageOutput(f"stage 0: {flux.init}", init, t1 - t0),
            StageOutput("stage 1: img2img" + (" (propagated)" if propagated else ""), stage1, t2 - t1),
            StageOutput("stage 2: ControlNet" + (" (propagated)" if propagated else ""), final, t3 - t2),
        ]
        return final

    def temporal_extras(self) -> dict:
        """What the next frame's prior should carry: this frame's stage-1 result and its noise."""
        return dict(self._extras)

    def stages(self) -> list[StageOutput]:
        return list(self._stages)
