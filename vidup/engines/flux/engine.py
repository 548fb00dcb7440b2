"""The two-stage FLUX upscaler (Multi-Stage Generative Upscaler, arXiv 2503.11181) on components the engine owns.

    stage 0  the input resized to the target (Lanczos, the paper; or the SR engine as a pre-upscaler)
    stage 1  img2img at strength ~0.75 from the resized frame rebuilds structure
    stage 2  the ControlNet upscaler, conditioned on and started from the stage-1 result (conditioning 0.5-0.65),
             restores texture

A keyframe runs exactly what `FluxImg2ImgPipeline` and `FluxControlNetImg2ImgPipeline` run (the tests compare
them); the loop itself is vidup's (`sampler.py`), so propagated frames can pin trusted content to the warped
previous result per pixel, and every step is visible to a callback.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from vidup.device import Placement, choose_placement
from vidup.engines.contract import EngineOutput, StageOutput
from vidup.engines.sr import SREngine
from vidup.engines.flux import latents as lat
from vidup.engines.flux.cache import make_cache
from vidup.engines.flux.components import FluxComponents, component_dtypes, encode_prompt, load_lora
from vidup.engines.flux.conditioning import Conditioning, flux_velocity, make_conditioning
from vidup.engines.flux.memory import MemoryPlan, Placer, choose_memory_plan, free_device_memory, working_bytes
from vidup.engines.flux.sampler import Pin, Step, sample_euler, start
from vidup.engines.flux.propagation import STAGES, FluxCarry, Propagator
from vidup.engines.flux.schedule import Plan, Schedules, image_seq_len
from vidup.engines.flux.tiles import Tile, needs_tiles, plan_tiles, tiled_velocity
from vidup.engines.flux.weights import resolve_base, resolve_controlnet, resolve_lora
from vidup.errors import ConfigError
from vidup.pixels import from_unit
from vidup.sizing import resize_rgb, round_up_to
from vidup.engines.anchor import COLOR_FIXES

if TYPE_CHECKING:
    from vidup.config import VidupConfig
    from vidup.temporal.state import TemporalPrior

log = logging.getLogger(__name__)
FLUX_MULTIPLE = 16  # the VAE halves three times and the transformer takes 2x2 patches


@dataclass
class FluxStats:
    """Telemetry, kept apart from the logic: tests and benchmarks read it, nothing in the engine decides by it."""

    steps_run: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    frames: dict = field(default_factory=lambda: {"keyframe": 0, "propagated": 0})
    steps_by_kind: dict = field(default_factory=lambda: {"keyframe": 0, "propagated": 0})
    prompt_encodings: int = 0  # the text encoders run once per clip
    last_frame: dict = field(default_factory=dict)


class FluxEngine:
    name = "flux"

    def __init__(self, config: "VidupConfig", components: FluxComponents | None = None):
        self.config = config
        self.flux = flux = config.flux
        # bf16 on accelerators; float32 on CPU, where bf16 diffusion is slow and loses detail.
        self.placement: Placement = choose_placement(config.device, config.precision, cpu_bf16=False)
        if self.placement.dtype == torch.float16:
            log.warning("fp16 FLUX can overflow; bf16 is the precision it was trained in (T5 runs in bf16/fp32)")
        # Resolve every file before loading any weight, so a missing one fails fast and names itself.
        self.lora_files = [resolve_lora(spec, flux.allow_download) for spec in flux.loras]
        self.turbo_file = resolve_lora(flux.turbo_lora, flux.allow_download) if flux.turbo_lora else None
        if components is None:
            base_dir, controlnet_dir = resolve_base(flux), resolve_controlnet(flux)
            components = FluxComponents.load(
                base_dir, controlnet_dir, component_dtypes(self.placement.dtype, self.placement.device)
            )
        self.components = components
        self.codec = lat.VaeCodec(components.vae)
        self.schedules = Schedules(components.scheduler_config, flux.resolution_shift)
        self.propagator = Propagator(self.schedules, config.temporal.flux, flux.seed, config.temporal.enabled)
        self._adapters = self._load_loras()
        self._active_adapters: tuple | None = None
        self.placer: Placer | None = None
        self.prompt = None
        self.stats = FluxStats()
        self.cache = None
        self._conditioning: dict[tuple[int, int], Conditioning] = {}
        self._pre_upscaler = None
        if flux.init == "sr":
            self._pre_upscaler = SREngine.from_config(config)
        self.on_step: Callable[[str, Step], None] | None = None  # per-step observer (tests, previews)

    # --- once per engine ------------------------------------------------------------------------------------

    def _load_loras(self) -> dict[str, list]:
        names, scales = [], []
        for i, (path, scale) in enumerate(self.lora_files):
            load_lora(self.components.transformer, path, f"lora{i}")
            names.append(f"lora{i}")
            scales.append(scale)
        adapters = {"keyframe": [names, scales], "propagated": [list(names), list(scales)]}
        if self.turbo_file is not None:
            path, scale = self.turbo_file
            load_lora(self.components.transformer, path, "turbo")
            adapters["propagated"][0].append("turbo")
            adapters["propagated"][1].append(scale)
        return adapters

    def _activate(self, kind: str) -> None:
        """Switch LoRA adapters per frame kind (the turbo LoRA on propagated frames only). Cheap: it sets scales
        and the active list; compiled blocks keep one graph per kind."""
        if not self.lora_files and self.turbo_file is None:
            return
        names, scales = self._adapters[kind]
        key = (tuple(names), tuple(scales))
        if key == self._active_adapters:
            return
        transformer = self.components.transformer
        if names:
            transformer.enable_lora()
            transformer.set_adapters(names, scales)
        else:
            transformer.disable_lora()
        self._active_adapters = key

    def planning_size(self) -> tuple[int, int]:
        spec = self.config.size_spec
        if spec.width is not None:
            return spec.width, spec.height
        side = spec.long_side or 1024
        return side, side

    def place(
        self, size: tuple[int, int] | None = None, free_memory: int | None = None, plan: MemoryPlan | None = None
    ) -> None:
        """Place the components, encode the clip's prompt, set up cache and compile. Runs once, before the first
        frame (or earlier, to report the plan). `free_memory` overrides the device's free bytes, `plan` the
        plan itself."""
        if self.placer is not None:
            return
        flux, device = self.flux, self.placement.device
        width, height = size or self.planning_size()
        free = free_memory if free_memory is not None else free_device_memory(device)
        plan = plan or choose_memory_plan(
            flux.offload,
            device,
            self.components.sizes(),
            working_bytes(width, height, flux.working_gib_per_mpix),
            free,
            int(flux.reserve_gib * 2**30),
        )
        log.info("FLUX memory plan: %s (%s)", plan.offload, plan.reason)
        self.placer = Placer(self.components.modules(), plan, device)
        self.placer.prompt_phase()
        self.prompt = encode_prompt(self.components, flux.prompt, flux.max_sequence_length)
        self.stats.prompt_encodings += 1
        self.placer.denoise_phase()
        if flux.vae_tiling:
            self.components.vae.enable_tiling()
        transformer = self.components.transformer
        self.cache = make_cache(
            flux.cache, transformer, flux.cache_threshold, flux.taylorseer_interval, flux.taylorseer_warmup
        )
        if flux.compile:
            transformer.compile_repeated_blocks(fullgraph=False, dynamic=False, backend=flux.compile_backend)

    # --- out-of-memory backoff (vidup.backoff) -------------------------------------------------------------------

    def footprint(self) -> tuple[bool, str]:
        return bool(getattr(self.components.vae, "use_tiling", False)), self.memory_plan.offload if self.placer else ""

    def set_footprint(self, state: tuple[bool, str]) -> None:
        """Back to a segment's starting VAE tiling. A move to sequential offload stays for the engine's life:
        undoing the block streaming costs more than the memory it would win back for one segment."""
        tiling, _ = state
        vae = self.components.vae
        vae.enable_tiling() if tiling else vae.disable_tiling()

    def shrink(self) -> str | None:
        """One step smaller: VAE tiling on, then blocks streamed in per step (sequential offload)."""
        if self.placement.device.type == "cuda":
            torch.cuda.empty_cache()
        vae = self.components.vae
        if not getattr(vae, "use_tiling", False):
            vae.enable_tiling()
            return "FLUX VAE tiling on"
        if self.placer is not None and self.placer.plan.offload != "sequential":
            old = self.placer.plan.offload
            self.placer.replan(MemoryPlan("sequential", "out of memory"))
            return f"FLUX offload {old} -> sequential"
        return None

    @property
    def active_adapters(self) -> list[str]:
        return list(self._active_adapters[0]) if self._active_adapters else []

    @property
    def memory_plan(self):
        return None if self.placer is None else self.placer.plan

    def conditioning(self, latent_h: int, latent_w: int) -> Conditioning:
        key = (latent_h, latent_w)
        if key not in self._conditioning:
            controlnet = self.components.controlnet
            self._conditioning[key] = make_conditioning(
                self.prompt.tokens,
                self.prompt.pooled,
                latent_h,
                latent_w,
                self.codec.device,
                self.components.transformer.dtype,
                self.flux.guidance if self.components.guidance_embeds else None,
                control_guidance=self.flux.guidance if controlnet.config.guidance_embeds else None,
            )
        return self._conditioning[key]

    def tiles(self, latent_h: int, latent_w: int) -> list[Tile] | None:
        """The tiles a (latent_h, latent_w) frame is denoised in, or None when it runs whole."""
        scale, flux = self.codec.scale_factor, self.flux
        if not needs_tiles(latent_w * scale, latent_h * scale, flux.max_megapixels):
            return None
        return plan_tiles(latent_h, latent_w, flux.tile_size // scale, flux.tile_overlap // scale)

    # --- denoising ------------------------------------------------------------------------------------------

    def denoiser(self, cond: Conditioning, control: torch.Tensor | None = None):
        """velocity(x, sigma) for stage 1 (control None) or stage 2 (control: packed control latents)."""
        return flux_velocity(
            self.components.transformer, self.components.controlnet, cond, control, self.flux.conditioning_scale
        )

    def frame_velocity(self, h: int, w: int, control: torch.Tensor | None = None):
        """velocity(x, sigma) over a whole (h, w) latent frame: one model call, or one per tile, blended (above
        flux.max_megapixels). `control`: unpacked control latents (stage 2), sliced per tile."""
        dtype = self.components.controlnet.dtype
        packed = lambda z: None if z is None else lat.pack(z.contiguous()).to(dtype)  # noqa: E731
        tiles = self.tiles(h, w)
        if tiles is None:
            return self.denoiser(self.conditioning(h, w), packed(control))
        cond = self.conditioning(tiles[0].h, tiles[0].w)  # every tile has the same size: one conditioning
        return tiled_velocity(
            tiles,
            h,
            w,
            lambda t: self.denoiser(cond, packed(None if control is None else control[t.window])),
            self.cache.region,
        )

    def run_stage(
        self,
        stage: str,
        plan: Plan,
        clean: torch.Tensor,
        noise: torch.Tensor,
        control: torch.Tensor | None = None,
        pin: Pin | None = None,
    ) -> torch.Tensor:
        """One stage: `clean` (1, C, h, w) latents noised to the plan's first sigma, denoised to the last. `control`
        (unpacked latents) selects stage 2. Returns unpacked latents."""
        h, w = clean.shape[-2:]
        x = start(lat.pack(clean.float()), lat.pack(noise.to(clean.device, torch.float32)), plan.sigmas, pin)

        def on_step(step: Step) -> None:
            self.stats.steps_run[stage] += 1
            if self.on_step is not None:
                self.on_step(stage, step)

        with self.cache.run(stage):
            x = sample_euler(self.frame_velocity(h, w, control), x, plan.sigmas, pin=pin, callback=on_step)
        return lat.unpack(x, h, w)

    # --- propagation ----------------------------------------------------------------------------------------

    # --- per frame ------------------------------------------------------------------------------------------

    def check_inputs(self, frame: np.ndarray, size: tuple[int, int]) -> None:
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype not in (np.uint8, np.uint16):
            raise ConfigError(
                f"the flux engine takes HxWx3 uint8 or uint16 RGB frames, got {frame.shape} {frame.dtype}"
            )
        if min(size) < FLUX_MULTIPLE:
            raise ConfigError(f"flux output sides must be at least {FLUX_MULTIPLE} pixels, got {size}")

    def initial_image(self, frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if self._pre_upscaler is not None and max(frame.shape[:2]) < max(size):
            return resize_rgb(self._pre_upscaler.super_resolve(frame), *size)
        return resize_rgb(frame, *size)

    @torch.inference_mode()
    def upscale(self, frame: np.ndarray, size: tuple[int, int], prior: "TemporalPrior | None" = None) -> EngineOutput:
        self.check_inputs(frame, size)
        self.place(size)
        flux, temporal = self.flux, self.config.temporal
        propagated = self.propagator.is_propagated(prior)
        kind = "propagated" if propagated else "keyframe"
        self._activate(kind)
        anchor = COLOR_FIXES[temporal.flux.color_fix if temporal.enabled else "none"]
        stats = self.stats
        steps_before, encodes_before = sum(stats.steps_run.values()), self.codec.encodes
        steps1 = flux.turbo_steps if propagated and self.turbo_file else flux.steps
        steps2 = flux.turbo_steps if propagated and self.turbo_file else flux.stage2_steps

        # 0. the starting image at the working size (the target, rounded up to FLUX's multiple of 16), and its
        #    latents. Images of the previous frame come at the target size and are resampled to the working size.
        t0 = time.perf_counter()
        work = (round_up_to(size[0], FLUX_MULTIPLE), round_up_to(size[1], FLUX_MULTIPLE))
        to_work = lambda image: resize_rgb(image, *work)  # noqa: E731  (identity when the target is a multiple)
        init = self.initial_image(frame, work)
        z_init = self.codec.encode(init)
        h, w = z_init.shape[-2:]
        seq_len = image_seq_len(work[1], work[0], self.codec.scale_factor)
        noises, fields, since = self.propagator.noise(z_init.shape, prior, propagated)
        confidence = self.propagator.latent_confidence(prior, h, w) if propagated else None
        t1 = time.perf_counter()

        # 1. img2img rebuilds structure; trusted content is held on the warped previous stage-1 result
        if propagated:
            target = self.codec.encode(to_work(prior.warp(prior.carry.stage1)))
            plan, pin = self.propagator.plan(
                steps1, flux.strength, temporal.flux.strength, confidence, target, noises["stage1"]
            )
        else:
            plan, pin = self.schedules.keyframe(steps1, flux.strength, seq_len), None
        depth = frame.dtype  # decoded images come back at the frame's precision
        stage1 = anchor(
            from_unit(self.codec.decode(self.run_stage("stage1", plan, z_init, noises["stage1"], pin=pin)), depth), init
        )
        t2 = time.perf_counter()

        # 2. the ControlNet upscaler restores texture, conditioned on (and started from) the stage-1 result; one
        #    encode serves as both the control and the start
        z_stage1 = self.codec.encode(stage1)
        control = z_stage1 if flux.control_image == "stage1" else z_init
        if propagated:
            target = self.codec.encode(to_work(prior.warped_output))
            plan, pin = self.propagator.plan(
                steps2, flux.stage2_strength, temporal.flux.stage2_strength, confidence, target, noises["stage2"]
            )
        else:
            plan, pin = self.schedules.keyframe(steps2, flux.stage2_strength, seq_len), None
        final = anchor(
            from_unit(
                self.codec.decode(self.run_stage("stage2", plan, z_stage1, noises["stage2"], control=control, pin=pin)),
                depth,
            ),
            init,
        )
        final = resize_rgb(final, *size)
        t3 = time.perf_counter()

        steps = sum(stats.steps_run.values()) - steps_before
        stats.frames[kind] += 1
        stats.steps_by_kind[kind] += steps
        stats.last_frame = {
            "kind": kind,
            "propagated": propagated,
            "steps": steps,
            "trusted": None if prior is None else prior.flows.trusted_fraction,
            "vae_encodes": self.codec.encodes - encodes_before,
        }
        suffix = " (propagated)" if propagated else ""
        stages = [
            StageOutput(f"stage 0: {flux.init}", init, t1 - t0),
            StageOutput("stage 1: img2img" + suffix, stage1, t2 - t1),
            StageOutput("stage 2: ControlNet" + suffix, final, t3 - t2),
        ]
        return EngineOutput(final, FluxCarry(resize_rgb(stage1, *size), fields, since), lambda: stages)
