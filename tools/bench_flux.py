"""Benchmark the two-stage FLUX engine.

    python tools/bench_flux.py cpu [--size 512 --frames 3]   # the tiny random checkpoint, through FluxEngine
    python tools/bench_flux.py gpu [--sizes 1024x576 1024x1024] # full-size FLUX.1-dev transformer + ControlNet
                                                               # upscaler, random bf16 weights (speed does not
                                                               # depend on the values), on CUDA

GPU mode reports seconds per denoising step for each stage (stage 1: transformer; stage 2: ControlNet +
transformer), seconds per frame for the paper preset (21 + 12 steps at strengths 0.75 / 0.4 of 28), peak VRAM,
and the effect of torch.compile and of FirstBlockCache. The cache's skip rate depends on real weights, so the
cache row reports the cost of a reused step and the frame time at a stated reuse fraction, not a measured one.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=[16, 56, 56])
CONTROLNET_UPSCALER = dict(FLUX_DEV, num_layers=5, num_single_layers=0)
PAPER_STEPS = (28 - int(28 - 28 * 0.75), 28 - int(28 - 28 * 0.4))  # stage 1, stage 2: 21 + 12 (get_timesteps)


def cpu_mode(args) -> dict:
    from make_tiny_flux import build
    from vidup.config import load_config
    from vidup.engines.flux import FluxEngine
    from vidup.video import VideoReader

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp))
        config = load_config(ROOT / "configs" / "paper.toml", {
            "flux.model": str(paths["base"]), "flux.controlnet": str(paths["controlnet"]), "size": str(args.size)})
        engine = FluxEngine(config)
        frames = [f.rgb for f, _ in zip(VideoReader(ROOT / "samples" / "football_256x144.mp4").frames(), range(args.frames))]
        size = config.size_spec.resolve(frames[0].shape[1], frames[0].shape[0])
        engine.upscale(frames[0], size)  # warm-up (and the once-per-clip prompt encoding)
        per_stage = {}
        started = time.perf_counter()
        for frame in frames:
            engine.upscale(frame, size)
            for stage in engine.stages():
                per_stage[stage.name] = per_stage.get(stage.name, 0.0) + stage.seconds / len(frames)
        per_frame = (time.perf_counter() - started) / len(frames)
    result = {"mode": "cpu tiny", "size": f"{size[0]}x{size[1]}", "steps": list(PAPER_STEPS),
              "seconds_per_stage": per_stage, "seconds_per_frame": per_frame}
    print(f"tiny FLUX on CPU, paper preset ({PAPER_STEPS[0]} + {PAPER_STEPS[1]} steps), {result['size']}:")
    for name, seconds in per_stage.items():
        print(f"  {name:<22} {seconds:.3f} s")
    print(f"  per frame              {per_frame:.3f} s")
    return result


def _inputs(width: int, height: int, device, dtype):
    tokens = (width // 16) * (height // 16)
    text = 512
    return dict(
        hidden_states=torch.randn(1, tokens, 64, device=device, dtype=dtype),
        encoder_hidden_states=torch.randn(1, text, 4096, device=device, dtype=dtype),
        pooled_projections=torch.randn(1, 768, device=device, dtype=dtype),
        timestep=torch.tensor([0.5], device=device, dtype=dtype),
        img_ids=torch.zeros(tokens, 3, device=device, dtype=dtype),
        txt_ids=torch.zeros(text, 3, device=device, dtype=dtype),
        guidance=torch.tensor([3.5], device=device, dtype=dtype),
        return_dict=False,
    )


def _time(fn, repeats: int = 5) -> float:
    fn()
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats


def gpu_mode(args) -> dict:
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    assert torch.cuda.is_available(), "gpu mode needs CUDA"
    device, dtype = torch.device("cuda"), torch.bfloat16
    with torch.device(device):
        transformer = FluxTransformer2DModel(**FLUX_DEV).to(dtype).eval()
        controlnet = FluxControlNetModel(**CONTROLNET_UPSCALER).to(dtype).eval()
    results = {"mode": "gpu full-size random", "device": torch.cuda.get_device_name(), "sizes": {}}
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        inputs = _inputs(width, height, device, dtype)
        control = dict(inputs, controlnet_cond=torch.randn_like(inputs["hidden_states"]), conditioning_scale=0.6)

        def stage1_step(model=transformer):
            return model(**inputs)

        def stage2_step(model=transformer):
            blocks, single = controlnet(**control)
            return model(**inputs, controlnet_block_samples=blocks, controlnet_single_block_samples=single)

        row = {}
        with torch.inference_mode():
            torch.cuda.reset_peak_memory_stats()
            row["stage1_step_s"] = _time(stage1_step)
            row["stage2_step_s"] = _time(stage2_step)
            row["peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
            row["paper_frame_s"] = PAPER_STEPS[0] * row["stage1_step_s"] + PAPER_STEPS[1] * row["stage2_step_s"]
            if args.compile:
                compiled = torch.compile(transformer, fullgraph=False, dynamic=False)
                row["stage1_step_compiled_s"] = _time(lambda: stage1_step(compiled))
                row["stage2_step_compiled_s"] = _time(lambda: stage2_step(compiled))
                row["paper_frame_compiled_s"] = (PAPER_STEPS[0] * row["stage1_step_compiled_s"]
                                                 + PAPER_STEPS[1] * row["stage2_step_compiled_s"])
            # FirstBlockCache: a reused step runs only the first double block.
            row["cached_step_fraction"] = None
            if args.cache_reuse:
                from diffusers.hooks import FirstBlockCacheConfig

                transformer.enable_cache(FirstBlockCacheConfig(threshold=1e9))  # reuse whenever it may
                with transformer.cache_context("bench"):
                    stage1_step()
                    reused = _time(stage1_step)
                transformer.disable_cache()
                row["cached_step_s"] = reused
                f = args.cache_reuse
                row["paper_frame_cached_s"] = sum(n * ((1 - f) * full + f * reused) for n, full in
                                                  zip(PAPER_STEPS, (row["stage1_step_s"], row["stage2_step_s"])))
        results["sizes"][size] = row
        print(size, json.dumps(row, indent=1))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    cpu = sub.add_parser("cpu")
    cpu.add_argument("--size", type=int, default=512)
    cpu.add_argument("--frames", type=int, default=3)
    gpu = sub.add_parser("gpu")
    gpu.add_argument("--sizes", nargs="+", default=["1024x576", "1024x1024"])
    gpu.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    gpu.add_argument("--cache-reuse", type=float, default=0.5, help="fraction of steps FirstBlockCache reuses")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = cpu_mode(args) if args.mode == "cpu" else gpu_mode(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
