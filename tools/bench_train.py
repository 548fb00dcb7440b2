"""Benchmark `vidup train-lora`: seconds per step and peak memory.

    python tools/bench_train.py              # the tiny random FLUX on the CPU (what CI machines can run)
    python tools/bench_train.py --gpu        # on CUDA also: the full-size FLUX.1-dev transformer with random bf16
                                             # weights, rank 16, 1024 px, batch 1, with and without gradient
                                             # checkpointing and 8-bit Adam: s/step and peak VRAM

CPU peak memory is the process's peak RSS (it includes the whole Python process and the tiny models).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def images(folder: Path, count: int, size=(128, 72)) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = cv2.GaussianBlur(rng.integers(0, 255, (size[1], size[0], 3), np.uint8), (0, 0), 2)
        cv2.imwrite(str(folder / f"frame{i}.png"), image)
    return folder


def tiny_cpu(steps: int = 20, resolution: int = 64) -> dict:
    from make_tiny_flux import build

    from vidup import load_config
    from vidup.train.trainer import train_lora

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = build(tmp / "tiny")
        config = load_config(
            overrides={
                "flux.model": str(paths["base"]),
                "flux.controlnet": str(paths["controlnet"]),
                "quiet": True,
                "train.resolution": resolution,
                "train.steps": steps,
                "train.validate_every": 0,
                "train.checkpoint_every": steps,
            }
        )
        report = train_lora(images(tmp / "data", 4), tmp / "lora.safetensors", config)
    # s/step from the loop alone: the report's seconds include loading and caching.
    return {
        "steps": steps,
        "resolution": resolution,
        "seconds_total": report.seconds,
        "s_per_step": report.seconds / steps,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "optimizer": report.optimizer,
    }


def full_gpu(
    checkpointing: bool,
    eight_bit: bool,
    steps: int = 5,
    size: str = "full",
    device: str = "cuda",
    latent_side: int = 128,
    text_tokens: int = 512,
) -> dict:
    """The FLUX.1-dev transformer (random bf16 weights) with a rank-16 LoRA, one 1024x1024 latent, batch 1.
    `size="tiny"` with a small `latent_side` runs the same step on the CPU in float32 (tools/gpu_check.py --tiny)."""
    from make_tiny_flux import random_modules
    from peft import LoraConfig

    from vidup.engines.flux import latents as lat
    from vidup.engines.flux.conditioning import flux_velocity, make_conditioning
    from vidup.train.trainer import ATTENTION_TARGETS, make_optimizer

    device = torch.device(device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    modules = random_modules(size, dtype, device)
    transformer = modules.pop("transformer")
    del modules  # the text encoders, VAE and ControlNet are not part of a training step
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()  # after they are gone: they would count in the peak
    transformer.requires_grad_(False)
    transformer.add_adapter(
        LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=ATTENTION_TARGETS),
        adapter_name="vidup",
    )
    params = [p for p in transformer.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()

    class Settings:
        lr, weight_decay = 1e-4, 1e-4

    optimizer = make_optimizer("adamw8bit" if eight_bit else "adamw", params, Settings)
    x0 = torch.randn(1, 16, latent_side, latent_side, device=device)
    packed = lat.pack(x0)
    dims = transformer.config
    cond = make_conditioning(
        torch.randn(1, text_tokens, dims.joint_attention_dim),
        torch.randn(1, dims.pooled_projection_dim),
        latent_side,
        latent_side,
        device,
        dtype,
        1.0,
    )
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    times = []
    for _ in range(steps + 1):
        sync()
        t0 = time.perf_counter()
        noise = torch.randn_like(packed)
        sigma = torch.rand(1, device=device)
        noisy = (1 - sigma) * packed + sigma * noise
        loss = torch.nn.functional.mse_loss(
            flux_velocity(transformer, None, cond)(noisy, sigma).float(), noise - packed
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - t0)
    return {
        "checkpointing": checkpointing,
        "adam_8bit": eight_bit,
        "s_per_step": float(np.median(times[1:])),
        "peak_vram_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {"tiny_cpu": tiny_cpu(args.steps)}
    r = results["tiny_cpu"]
    print(
        f"tiny FLUX on the CPU, {r['resolution']} px, batch 1: {r['s_per_step']:.3f} s/step over {r['steps']} steps "
        f"(including loading and caching), peak RSS {r['peak_rss_mib']:.0f} MiB, optimizer {r['optimizer']}"
    )
    if args.gpu:
        if not torch.cuda.is_available():
            results["full_gpu"] = "no CUDA device"
        else:
            rows = [full_gpu(c, e) for c, e in ((True, True), (True, False), (False, True), (False, False))]
            results["full_gpu"] = rows
            print("| gradient checkpointing | 8-bit Adam | s/step | peak VRAM GiB |\n|---|---|---|---|")
            for row in rows:
                print(
                    f"| {row['checkpointing']} | {row['adam_8bit']} | {row['s_per_step']:.2f} | "
                    f"{row['peak_vram_gib']:.1f} |"
                )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
