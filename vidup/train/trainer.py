"""`vidup train-lora`: a LoRA for the FLUX engine, trained on the engine's own components and flow-matching
math, in numbered stages:

1. Checks, before any model loads: the data (`vidup.train.data.scan`), the output name, the optimizer, and a
   resume checkpoint's base model and rank.
2. Load the FLUX components through the engine's loading path (same resolution rules and errors as `upscale`).
3. Prepare the data once: each image into its aspect-ratio bucket, VAE latents (the engine's `VaeCodec`) and text
   embeddings cached to disk; then the VAE and text encoders leave the device.
4. Train a peft LoRA on the transformer: flow-matching loss on packed latents, target `noise - latents`, at
   logit-normal timesteps shifted as inference shifts its sigmas (`Schedules.shift`), guidance 1.0 for the
   distilled model; checkpoints (LoRA, optimizer, data order, RNG) so `--resume` continues exactly; validation
   sheets of held-out frames upscaled by the two-stage engine with the current LoRA, and the loss curve.
5. Save the LoRA in the diffusers format `--lora` loads, with metadata.

The working folder `OUT_STEM.train/` beside the output holds cache/, checkpoints/ and validation/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file

from vidup.config import VidupConfig
from vidup.device import choose_placement
from vidup.engines.flux import latents as lat
from vidup.engines.flux.components import FluxComponents, component_dtypes, encode_prompt
from vidup.engines.flux.conditioning import flux_velocity, make_conditioning
from vidup.engines.flux.engine import FluxEngine
from vidup.engines.flux.latents import VaeCodec
from vidup.engines.flux.memory import GIB, choose_memory_plan, free_device_memory, on_device, working_bytes
from vidup.engines.flux.schedule import Schedules
from vidup.engines.flux.weights import resolve_base, resolve_controlnet
from vidup.preview import Panel, choose_crops, render_sheet
from vidup.progress import progress_bar
from vidup.errors import CheckpointError, ConfigError, TrainingDataError
from vidup.train import data as train_data

log = logging.getLogger("vidup")

ADAPTER = "vidup"
ATTENTION_TARGETS = [
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.to_out.0",  # image stream (and single blocks)
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
]  # text stream
FEED_FORWARD_TARGETS = ["ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"]
GRAD_CLIP = 1.0
FIXED_LOSS_SEED, FIXED_LOSS_DRAWS = 1234, 4  # the fixed-noise loss reported before and after training
GUIDANCE = 1.0  # the guidance embedding FLUX.1-dev (guidance-distilled) is trained with


@dataclass
class TrainReport:
    output: Path
    steps: int
    losses: list[float]
    items: int  # training images
    held_out: int
    vae_encodes: int  # images encoded by the VAE in this run (0 when the cache was reused)
    optimizer: str
    seconds: float
    peak_memory_bytes: int | None = None
    validation_sheets: list[Path] = field(default_factory=list)
    released: tuple[str, ...] = ()  # components moved off the device before the first step
    fixed_loss_before: float | None = None  # the loss on training images at fixed noise and timesteps
    fixed_loss_after: float | None = None


def work_folder(output: Path) -> Path:
    return output.with_name(output.stem + ".train")


def read_checkpoint(path: Path) -> dict:
    state_file = Path(path) / "state.json"
    if not state_file.is_file():
        raise CheckpointError(f"{path} is not a vidup training checkpoint (no state.json)")
    try:
        return json.loads(state_file.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{state_file} cannot be read: {exc}") from None


def latest_checkpoint(output: Path) -> Path | None:
    folder = work_folder(output) / "checkpoints"
    found = sorted(folder.glob("step-*")) if folder.is_dir() else []
    return found[-1] if found else None


def choose_optimizer(requested: str, device: torch.device) -> str:
    try:
        import bitsandbytes  # noqa: F401

        have_bnb = True
    except ImportError:
        have_bnb = False
    if requested == "adamw8bit" and not have_bnb:
        raise ConfigError("train.optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes")
    if requested == "auto":
        return "adamw8bit" if have_bnb and device.type == "cuda" else "adamw"
    return requested


def make_optimizer(kind: str, params, config) -> torch.optim.Optimizer:
    if kind == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


# --- data order ---------------------------------------------------------------------------------------------------


def epoch_batches(buckets: list[tuple[int, int]], batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a seeded shuffle, then items grouped by bucket (a batch shares one size)."""
    order = torch.randperm(len(buckets), generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()
    open_batches: dict[tuple[int, int], list[int]] = {}
    batches = []
    for index in order:
        group = open_batches.setdefault(buckets[index], [])
        group.append(index)
        if len(group) == batch:
            batches.append(group[:])
            group.clear()
    batches += [group for group in open_batches.values() if group]  # the remainders, smaller
    return batches


# --- the cache ----------------------------------------------------------------------------------------------------


def _cache_key(items: list, resolution: int, base: Path, max_length: int) -> str:
    parts = [str(base.resolve()), str(resolution), str(max_length)]
    for item in items:
        stat = item.path.stat()
        parts.append(f"{item.name}|{stat.st_size}|{stat.st_mtime_ns}|{item.caption}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def prepare_cache(items, components, folder: Path, config: VidupConfig, base: Path) -> tuple[list[dict], int]:
    """Latents and text embeddings of every training item, from the cache when it matches, else encoded once
    and saved. Returns (entries, images encoded now)."""
    t = config.train
    key = _cache_key(items, t.resolution, base, config.flux.max_sequence_length)
    cache_file = folder / "cache.pt"
    if cache_file.is_file():
        cached = torch.load(cache_file, weights_only=True)
        if cached.get("key") == key:
            return cached["entries"], 0
    codec = VaeCodec(components.vae)
    prompts: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    entries = []
    with torch.inference_mode():
        for item, rgb in train_data.images(items):
            fitted = train_data.fit_to_bucket(rgb, t.resolution, t.small_images, item.name)
            latents = codec.encode(fitted.astype(np.float32) / 255.0).float().cpu()
            if item.caption not in prompts:
                embedded = encode_prompt(components, item.caption, config.flux.max_sequence_length)
                prompts[item.caption] = (embedded.tokens.float().cpu(), embedded.pooled.float().cpu())
            entries.append(
                {
                    "name": item.name,
                    "latents": latents[0],
                    "caption": item.caption,
                    "tokens": prompts[item.caption][0][0],
                    "pooled": prompts[item.caption][1][0],
                }
            )
    order = {item.name: i for i, item in enumerate(items)}
    entries.sort(key=lambda e: order[e["name"]])
    folder.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".part")
    torch.save({"key": key, "entries": entries}, tmp)
    os.replace(tmp, cache_file)
    return entries, codec.encodes


# --- checkpoints and output ---------------------------------------------------------------------------------------


def _rng_state(generator: torch.Generator) -> dict:
    return {
        "generator": generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def save_checkpoint(
    folder: Path, step: int, transformer, optimizer, generator, meta: dict, losses: list[float]
) -> Path:
    from peft.utils import get_peft_model_state_dict

    path = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.part"
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(get_peft_model_state_dict(transformer, adapter_name=ADAPTER), tmp / "lora.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(_rng_state(generator), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps(dict(meta, step=step, losses=losses), indent=1))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def lora_output_state(transformer, rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """The adapter in the diffusers layout (`transformer.<module>.lora_A/B.weight`), with alpha/rank folded into
    lora_B so any loader (which assumes alpha = rank without metadata) applies exactly the trained update."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(transformer, adapter_name=ADAPTER)
    out = {}
    for key, value in state.items():
        value = value.detach().float().cpu()
        if "lora_B" in key:
            value = value * (alpha / rank)
        out[f"transformer.{key}"] = value.contiguous()
    return out


def save_lora(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def loss_curve(losses: list[float], path: Path, size=(640, 320)) -> None:
    """The loss per step (and its running mean) as a PNG, drawn with OpenCV."""
    w, h = size
    image = np.full((h, w, 3), 255, np.uint8)
    if len(losses) >= 2:
        values = np.asarray(losses, np.float64)
        mean = np.convolve(values, np.ones(min(10, len(values))) / min(10, len(values)), mode="valid")
        low, high = float(values.min()), float(values.max()) or 1.0
        span = (high - low) or 1.0

        def points(series, offset=0):
            xs = 40 + (np.arange(len(series)) + offset) * (w - 60) / max(1, len(values) - 1)
            ys = h - 30 - (series - low) / span * (h - 60)
            return np.stack([xs, ys], axis=1).astype(np.int32)

        cv2.polylines(image, [points(values)], False, (180, 180, 255), 1, cv2.LINE_AA)
        cv2.polylines(image, [points(mean, len(values) - len(mean))], False, (200, 40, 40), 2, cv2.LINE_AA)
        cv2.putText(image, f"{high:.4f}", (2, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(image, f"{low:.4f}", (2, h - 30), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"loss, {len(losses)} steps", (40, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), image)


def validation_plan(
    flux, device: torch.device, sizes: dict[str, int], resident: set[str], size: tuple[int, int], free: int | None
):
    """The validator's memory plan. The modules already on the device (the transformer under training) count as
    there, not against `free`, and nothing streams: group offloading would swap the LoRA parameters' data to host
    copies while their gradients and optimizer state stay on the device. When even `model` may not fit, it is
    `model` with a warning: the planning margins are generous, and a sheet that does run out of memory is skipped
    (`Validator.sheet`) rather than ending the training."""
    return choose_memory_plan(
        flux.offload,
        device,
        sizes,
        working_bytes(*size, flux.working_gib_per_mpix),
        free,
        int(flux.reserve_gib * GIB),
        resident=resident,
        allow_sequential=False,
    )


class Validator:
    """Held-out frames, degraded, upscaled by the two-stage engine with the LoRA as it stands, as QA sheets."""

    def __init__(self, config: VidupConfig, components, held_out: list[tuple[str, np.ndarray]]):
        self.held_out = held_out
        self.enabled = True
        flux = replace(config.flux, loras=[], turbo_lora=None, compile=False, cache="none")
        self.engine = FluxEngine(replace(config, flux=flux), components)

    def memory_plan(self):
        """`validation_plan` for the largest held-out frame, from the device as training leaves it."""
        device = self.engine.placement.device
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the training step's cached blocks are free for validation
        components = self.engine.components
        size = max(((i.shape[1], i.shape[0]) for _, i in self.held_out), key=lambda s: s[0] * s[1])
        return validation_plan(
            self.engine.flux,
            device,
            components.sizes(),
            on_device(components.modules(), device),
            size,
            free_device_memory(device),
        )

    def _back_to_training(self) -> None:
        """Every component but the transformer leaves the device; the transformer stays, with its gradients and
        optimizer state."""
        placer = self.engine.placer
        others = [name for name in self.engine.components.modules() if name != "transformer"]
        if placer is not None:
            placer.release(others)
        else:  # the placer itself failed to place everything
            for name in others:
                getattr(self.engine.components, name).to("cpu")

    def sheet(self, step: int, folder: Path) -> Path | None:
        """The sheet at `step`, or None (and no more validation this run) when it ran out of memory."""
        transformer = self.engine.components.transformer
        was_training = transformer.training
        transformer.eval()
        try:
            rows = self._rows()
        except torch.OutOfMemoryError:
            self.enabled = False
            log.warning("validation at step %d ran out of memory: training goes on without validation sheets", step)
            return None
        finally:
            self._back_to_training()
            transformer.train(was_training)
        width = max(r.shape[1] for r in rows)
        sheet = np.vstack([np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0))) for r in rows])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step-{step:06d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        return path

    def _rows(self) -> list[np.ndarray]:
        t = self.engine.config.train
        rows = []
        for name, image in self.held_out:
            h, w = image.shape[:2]
            size = (w, h)
            low = cv2.resize(
                image,
                (max(16, w // t.validation_degrade), max(16, h // t.validation_degrade)),
                interpolation=cv2.INTER_AREA,
            )
            if self.engine.placer is None:
                self.engine.place(size, plan=self.memory_plan())
            else:
                self.engine.placer.denoise_phase()
            t0 = time.perf_counter()
            output = self.engine.upscale(low, size)
            seconds = time.perf_counter() - t0
            panels = [
                Panel(
                    f"{name}: degraded x{t.validation_degrade} (nearest)",
                    cv2.resize(low, size, interpolation=cv2.INTER_NEAREST),
                    0.0,
                ),
                Panel("Lanczos", cv2.resize(low, size, interpolation=cv2.INTER_LANCZOS4), 0.0),
            ]
            panels += [Panel(s.name, s.image, s.seconds) for s in output.stages()]
            panels.append(Panel(f"ground truth (engine {seconds:.1f} s)", image, 0.0))
            rows.append(render_sheet(panels, choose_crops(image), size))
        return rows


def train_lora(
    data: str | Path,
    output: str | Path,
    config: VidupConfig,
    resume: str | Path | None = None,
    components=None,
    steps_this_run: int | None = None,
) -> TrainReport:
    """Train; `steps_this_run` stops early (as an interruption would) after that many steps of this run."""
    # 1. Checks, before any model loads.
    config = config.validate()
    t, flux = config.train, config.flux
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ConfigError(
            f"the LoRA is written as .safetensors; give a name such as {output.with_suffix('.safetensors')}"
        )
    if output.is_dir():
        raise ConfigError(f"{output} is a folder; give a file name such as {output / 'lora.safetensors'}")
    dataset = train_data.scan(data, t)
    placement = choose_placement(config.device, config.precision, cpu_bf16=False)
    optimizer_kind = choose_optimizer(t.optimizer, placement.device)
    base_dir = resolve_base(flux)
    meta = {
        "base_model": str(base_dir.resolve()),
        "rank": t.rank,
        "alpha": t.alpha,
        "feed_forward": t.feed_forward,
        "resolution": t.resolution,
        "seed": t.seed,
    }
    resume_path, resume_state = None, None
    if resume is not None:
        resume_path = latest_checkpoint(output) if str(resume) == "latest" else Path(resume)
        if resume_path is None:
            raise CheckpointError(f"no checkpoint to resume in {work_folder(output) / 'checkpoints'}")
        resume_state = read_checkpoint(resume_path)
        for key in ("base_model", "rank", "alpha", "feed_forward"):
            if resume_state.get(key) != meta[key]:
                raise CheckpointError(
                    f"{resume_path} was trained with {key} {resume_state.get(key)!r}, this run "
                    f"has {meta[key]!r}; resume with the same settings or start afresh"
                )
    controlnet_dir = resolve_controlnet(flux)
    items = train_data.sources(dataset, t, config.temporal.shots)
    if not items:
        raise TrainingDataError(f"{dataset.folder} yielded no training images")
    held = min(t.validation_frames, len(items) - 1) if t.validate_every else 0
    train_items, held_items = (items[:-held], items[-held:]) if held else (items, [])

    # 2. The engine's components, through the engine's loading path.
    started = time.perf_counter()
    if components is None:
        components = FluxComponents.load(base_dir, controlnet_dir, component_dtypes(placement.dtype, placement.device))
    device = placement.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for name in ("vae", "text_encoder", "text_encoder_2"):
        getattr(components, name).to(device)

    # 3. Data prepared once; the encoders leave the device.
    folder = work_folder(output)
    entries, encoded = prepare_cache(train_items, components, folder / "cache", config, base_dir)
    validator = None
    if held_items:
        held_images = [
            (item.name, train_data.fit_to_bucket(rgb, t.resolution, "upsample", item.name))
            for item, rgb in train_data.images(held_items)
        ]
        validator = Validator(config, components, held_images)
    released = ("text_encoder", "text_encoder_2", "vae", "controlnet")
    for name in released:
        getattr(components, name).to("cpu")
    if device.type == "cuda":
        torch.cuda.empty_cache()

    # 4. Training.
    from peft import LoraConfig

    transformer = components.transformer.to(device)
    transformer.requires_grad_(False)
    targets = ATTENTION_TARGETS + (FEED_FORWARD_TARGETS if t.feed_forward else [])
    torch.manual_seed(t.seed)  # the LoRA's initial weights: the same for every run of this seed
    transformer.add_adapter(
        LoraConfig(r=t.rank, lora_alpha=t.alpha, init_lora_weights="gaussian", target_modules=targets),
        adapter_name=ADAPTER,
    )
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()  # LoRA weights train in fp32 (the base stays bf16)
    if t.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    optimizer = make_optimizer(optimizer_kind, params, t)
    schedules = Schedules(components.scheduler_config)
    generator = torch.Generator().manual_seed(t.seed)
    guidance = GUIDANCE if components.guidance_embeds else None
    bucket_of = [tuple(e["latents"].shape[-2:]) for e in entries]

    def step_loss(chosen: list[dict], generator: torch.Generator) -> torch.Tensor:
        """The flow-matching loss of a batch: noisy = (1 - sigma) x0 + sigma noise, target noise - x0."""
        x0 = torch.stack([e["latents"] for e in chosen]).to(device)
        h, w = x0.shape[-2:]
        packed = lat.pack(x0)
        noise = torch.randn(packed.shape, generator=generator).to(device)
        u = torch.sigmoid(t.timestep_mean + t.timestep_std * torch.randn(len(chosen), generator=generator))
        sigma = schedules.shift(u, packed.shape[1]).to(device)
        noisy = (1 - sigma[:, None, None]) * packed + sigma[:, None, None] * noise
        cond = make_conditioning(
            torch.stack([e["tokens"] for e in chosen]),
            torch.stack([e["pooled"] for e in chosen]),
            h,
            w,
            device,
            transformer.dtype,
            guidance,
            batch=len(chosen),
        )
        prediction = flux_velocity(transformer, None, cond)(noisy, sigma)
        return torch.nn.functional.mse_loss(prediction.float(), (noise - packed).float())

    def fixed_loss() -> float:
        """The loss on the first training images at fixed noise and timesteps: a steady measure of progress."""
        probe = torch.Generator().manual_seed(FIXED_LOSS_SEED)
        with torch.no_grad():
            return float(
                np.mean([float(step_loss([entries[i % len(entries)]], probe)) for i in range(FIXED_LOSS_DRAWS)])
            )

    step, epoch, position, losses = 0, 0, 0, []
    if resume_state is not None:
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(
            transformer, torch.load(resume_path / "lora.pt", weights_only=True), adapter_name=ADAPTER
        )  # copied into the fp32 parameters above
        optimizer.load_state_dict(torch.load(resume_path / "optimizer.pt", weights_only=True))
        rng = torch.load(resume_path / "rng.pt", weights_only=False)
        generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        step, epoch, position = resume_state["step"], resume_state["epoch"], resume_state["position"]
        losses = list(resume_state.get("losses", []))
    loss_before = fixed_loss()
    batches = epoch_batches(bucket_of, t.batch, t.seed, epoch)
    sheets: list[Path] = []

    run_steps = 0
    with progress_bar(t.steps, config.quiet, output.name) as bar:
        bar.unit = "step"
        bar.update(step)
        while step < t.steps and (steps_this_run is None or run_steps < steps_this_run):
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(t.grad_accum):
                if position >= len(batches):
                    epoch, position = epoch + 1, 0
                    batches = epoch_batches(bucket_of, t.batch, t.seed, epoch)
                chosen = [entries[i] for i in batches[position]]
                position += 1
                loss = step_loss(chosen, generator)
                (loss / t.grad_accum).backward()
                total += float(loss.detach()) / t.grad_accum
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            optimizer.step()
            step += 1
            run_steps += 1
            losses.append(total)
            bar.set_postfix(loss=f"{total:.4f}", refresh=False)
            bar.update(1)
            state = dict(meta, epoch=epoch, position=position)
            if step % t.checkpoint_every == 0 or step == t.steps:
                save_checkpoint(folder / "checkpoints", step, transformer, optimizer, generator, state, losses)
            if validator is not None and validator.enabled and (step % t.validate_every == 0 or step == t.steps):
                sheet = validator.sheet(step, folder / "validation")
                sheets += [sheet] if sheet is not None else []
                loss_curve(losses, folder / "loss.png")

    # 5. The LoRA, as --lora loads it.
    if step >= t.steps:
        summary = f"{len(train_items)} images ({dataset.summary()}), {held} held out"
        save_lora(
            output,
            lora_output_state(transformer, t.rank, t.alpha),
            {
                "format": "pt",
                "vidup.base_model": Path(meta["base_model"]).name,
                "vidup.rank": str(t.rank),
                "vidup.alpha": str(t.alpha),
                "vidup.steps": str(step),
                "vidup.data": summary,
                "vidup.resolution": str(t.resolution),
                "vidup.targets": ",".join(targets),
            },
        )
        loss_curve(losses, folder / "loss.png")
    loss_after = fixed_loss()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return TrainReport(
        output,
        step,
        losses,
        len(train_items),
        held,
        encoded,
        optimizer_kind,
        time.perf_counter() - started,
        peak,
        sheets,
        released,
        loss_before,
        loss_after,
    )
