"""Benchmark the two-stage FLUX engine through its real code: VAE encodes and decodes, the memory plan and its
transfers, the sampler, propagation, cache and compile. Keyframes and propagated frames are timed separately.

    python tools/bench_flux.py cpu [--sizes 512x288 --frames 7]        # the tiny random checkpoint, from disk
    python tools/bench_flux.py gpu [--sizes 1024x576 1024x1024]         # FLUX.1-dev-sized components with random
                                                                        # bf16 weights (speed does not depend on
                                                                        # the values), created in bf16, on CUDA

Frames are the bundled sample's (a pan with players), resized to each size, through the `Upscaler` with temporal
coherence on and a keyframe every 3 frames, so both frame kinds recur. The first keyframe and the first
propagated frame are warm-ups (prompt encoding, compilation) and are not counted. Peak memory is the whole
engine's: text encoders, VAE, transformer, ControlNet and activations. Variants: plain, compile, cache
(first-block, which reuses real steps only as the weights allow: random weights make it a lower bound of reuse),
compile+cache.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

VARIANTS = {
    "plain": {},
    "compile": {"flux.compile": True},
    "cache": {"flux.cache": "first-block"},
    "compile+cache": {"flux.compile": True, "flux.cache": "first-block"},
}


def sample_frames(count: int):
    from vidup.video import VideoReader

    return [f.rgb for f, _ in zip(VideoReader(ROOT / "samples" / "football_256x144.mp4").frames(), range(count))]


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_size(engine, config, frames, size: str, warmup: int = 1) -> dict:
    """Seconds per keyframe and per propagated frame at `size` (medians), the first `warmup` of each kind left out."""
    from vidup.upscaler import Upscaler

    width, height = (int(v) for v in size.split("x"))
    upscaler = Upscaler(config, engine)
    upscaler.target_size = lambda w, h: (width, height)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seconds = {"keyframe": [], "propagated": []}
    steps = {"keyframe": [], "propagated": []}
    for frame in frames:
        synchronize()
        started = time.perf_counter()
        upscaler.upscale_frame(frame)
        synchronize()
        kind = engine.stats.last_frame["kind"]
        seconds[kind].append(time.perf_counter() - started)
        steps[kind].append(engine.stats.last_frame["steps"])
    row = {"size": size, "plan": engine.memory_plan.offload}
    for kind in seconds:
        timed = seconds[kind][warmup:]  # the first of each kind warms up (compile, allocator)
        row[f"{kind}_s"] = statistics.median(timed) if timed else None
        row[f"{kind}_steps"] = statistics.median(steps[kind]) if steps[kind] else None
    if row["keyframe_s"] and row["propagated_s"]:
        row["propagated_over_keyframe"] = row["propagated_s"] / row["keyframe_s"]
    if torch.cuda.is_available():
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    row["cache"] = {"computed": engine.cache.stats.computed, "reused": engine.cache.stats.reused}
    return row


def full_size_engine(config, build_on: str = "cpu", plan_size: tuple[int, int] | None = None):
    """The engine on FLUX.1-dev-sized components with random bf16 weights, created in bf16 from the start.
    `build_on="cuda"` creates them on the GPU (seconds, where the host's random number generator takes a minute or
    more) and plans memory for `plan_size` from the free memory before they were created, as if loaded from disk."""
    from make_tiny_flux import random_components

    from vidup.engines.flux.engine import FluxEngine
    from vidup.engines.flux.memory import free_device_memory

    free = free_device_memory(torch.device(build_on))
    started = time.perf_counter()
    components = random_components("full", torch.bfloat16, build_on)
    print(f"built full-size random components on {build_on} in {time.perf_counter() - started:.0f} s", flush=True)
    engine = FluxEngine(config, components=components)
    if free is not None:
        engine.place(plan_size, free_memory=free)
    return engine


def bench(mode: str, sizes: list[str], frame_count: int, variants: list[str]) -> list[dict]:
    from make_tiny_flux import build

    from vidup.config import load_config
    from vidup.engines.flux.engine import FluxEngine

    frames = sample_frames(frame_count)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp)) if mode == "cpu" else None
        for variant in variants:
            overrides = {"quiet": True, "temporal.flux.keyframe_interval": 3, **VARIANTS[variant]}
            if paths:
                overrides |= {"flux.model": str(paths["base"]), "flux.controlnet": str(paths["controlnet"])}
            if mode == "cpu":
                overrides["flux.compile_backend"] = "eager"  # inductor on a 2-core CPU compiles for minutes
            config = load_config(ROOT / "configs" / "paper.toml", overrides)
            engine = FluxEngine(config) if mode == "cpu" else full_size_engine(config)
            for size in sizes:
                row = {"variant": variant, **run_size(engine, config, frames, size)}
                print(json.dumps(row), flush=True)
                rows.append(row)
            del engine
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def table(rows: list[dict]) -> str:
    def cell(value, fmt="{:.2f}"):
        return "-" if value is None else fmt.format(value)

    lines = [
        "| size | variant | plan | keyframe s | propagated s | propagated / keyframe | steps (key / prop) | "
        "peak GiB | cache reused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['variant']} | {r['plan']} | {cell(r['keyframe_s'])} | "
            f"{cell(r['propagated_s'])} | {cell(r.get('propagated_over_keyframe'))} | "
            f"{cell(r['keyframe_steps'], '{:.0f}')} / {cell(r['propagated_steps'], '{:.0f}')} | "
            f"{cell(r.get('peak_gib'), '{:.1f}')} | {r['cache']['reused']} of "
            f"{r['cache']['reused'] + r['cache']['computed']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["cpu", "gpu"])
    parser.add_argument("--sizes", nargs="+")
    parser.add_argument("--frames", type=int, default=7)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.mode == "gpu" and not torch.cuda.is_available():
        parser.error("gpu mode needs CUDA")
    torch.set_num_threads(2) if args.mode == "cpu" else None
    sizes = args.sizes or (["512x288"] if args.mode == "cpu" else ["1024x576", "1024x1024"])
    rows = bench(args.mode, sizes, args.frames, args.variants)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
