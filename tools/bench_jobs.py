"""Benchmarks of file jobs (`python tools/bench.py --jobs`): on the sample and bikes.mp4, with the default SR
engine loaded once,

- the pre-pass (decode and find the cuts at the streaming analyser's resolution);
- wall time of the segmented job (`upscale_video`, one local worker) against the unsegmented streaming path it
  replaced (reader -> frame path -> writer, the same components), alternated so both see the same machine;
- local Ray cluster start-up (ray.init, and workers ready with the model loaded) on the sample;
- resuming a job killed (SIGKILL) half way, against running it whole.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KILL = """
import sys
from vidup import load_config, upscale_video
from vidup.testing import EngineFactory
config = load_config(overrides={"quiet": True, "job.segment_frames": int(sys.argv[3])})
upscale_video(sys.argv[1], sys.argv[2], config, engine_factory=EngineFactory("model", kill_after=int(sys.argv[4])))
"""


def unsegmented(clip: Path, out: Path, config, engine) -> float:
    """The streaming path before jobs: one reader, one frame path, one writer."""
    from vidup.report import StageTimes
    from vidup.upscaler import Upscaler
    from vidup.video.clip import describe_clip
    from vidup.frame_path import frame_path
    from vidup.video.timing import Position
    from vidup.video.reader import VideoReader, probe
    from vidup.video.writer import VideoWriter

    started = time.perf_counter()
    info = probe(clip)
    description = describe_clip(info, config, config.output.codec)
    upscaler = Upscaler(config, engine, description)
    reader = VideoReader(clip, info, on_decode_error=config.on_decode_error, description=description)
    end = Position.parse(config.end)
    window = None if end is None else (None, info.start_time + end.seconds_at(float(description.frame_rate)))
    with VideoWriter(out, description, config.output, source=info, overwrite=True, window=window) as writer:
        for frame, image in frame_path(reader.frames(None, end), upscaler, StageTimes(), config.pipeline):
            writer.write(image, frame.pts, frame.time_base)
    return time.perf_counter() - started


def segmented(clip: Path, out: Path, config, engine) -> float:
    from vidup import upscale_video

    started = time.perf_counter()
    upscale_video(clip, out, config, engine=engine)
    return time.perf_counter() - started


def prepass(clip: Path, config, repeats: int = 3) -> dict:
    from vidup.jobs.plan import make_plan
    from vidup.video.clip import describe_clip
    from vidup.video.timing import Position
    from vidup.video.reader import probe

    info = probe(clip)
    description = describe_clip(info, config, config.output.codec)
    times, plan = [], None
    for _ in range(repeats):
        plan = make_plan(info, description, config, None, Position.parse(config.end))
        times.append(plan.seconds)
    return {
        "seconds": statistics.median(times),
        "frames": plan.frames,
        "segments": len(plan.segments),
        "cuts": list(plan.cuts),
    }


def ray_startup(clip: Path, workers: int = 2) -> dict:
    import ray

    from vidup import load_config, upscale_video

    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    init = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(
                overrides={"quiet": True, "end": "40", "job.workers": workers, "job.segment_frames": 20}
            )
            report = upscale_video(clip, Path(tmp) / "out.mp4", config)
    finally:
        ray.shutdown()
    return {"ray_init_s": init, "workers_ready_s": report.ray_startup, "job_s": report.seconds, "frames": report.frames}


def resume_half(clip: Path, frames: int, segment_frames: int) -> dict:
    from vidup import load_config, upscale_video

    config = load_config(overrides={"quiet": True, "job.segment_frames": segment_frames})
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mp4"
        started = time.perf_counter()
        upscale_video(clip, Path(tmp) / "whole.mp4", config)
        whole = time.perf_counter() - started
        proc = subprocess.run(
            [sys.executable, "-c", KILL, str(clip), str(out), str(segment_frames), str(frames // 2)],
            capture_output=True,
        )
        assert proc.returncode == -9, proc.stderr.decode()
        started = time.perf_counter()
        report = upscale_video(clip, out, config)
        resumed = time.perf_counter() - started
    return {"whole_s": whole, "resume_s": resumed, "segments": report.segments, "resumed": report.segments_resumed}


def run(clips: dict[str, Path], repeats: int = 2, frames: int = 100) -> dict:
    """`frames`: the first frames of each clip (bikes has 250; the sample 100)."""
    from vidup import load_config, load_engine

    config = load_config(overrides={"quiet": True, "overwrite": True, "end": str(frames)})
    engine = load_engine(config)
    results: dict = {"prepass": {}, "wall": {}}
    for name, clip in clips.items():
        results["prepass"][name] = prepass(clip, config)
        walls = {"unsegmented": [], "segmented": []}
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                walls["unsegmented"].append(unsegmented(clip, Path(tmp) / "a.mp4", config, engine))
                walls["segmented"].append(segmented(clip, Path(tmp) / "b.mp4", config, engine))
        row = {k: statistics.median(v) for k, v in walls.items()}
        row["ratio"] = row["segmented"] / row["unsegmented"]
        results["wall"][name] = row
        print(f"{name}: pre-pass {results['prepass'][name]['seconds']:.2f} s; {row}", flush=True)
    sample = next(iter(clips.values()))
    results["ray"] = ray_startup(sample)
    results["resume"] = resume_half(sample, 100, 25)
    return results


def print_results(results: dict) -> None:
    print("| clip | frames | cuts | segments | pre-pass | unsegmented | segmented (1 worker) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name, p in results["prepass"].items():
        w = results["wall"][name]
        print(
            f"| {name} | {p['frames']} | {len(p['cuts']) - 1} | {p['segments']} | {p['seconds']:.2f} s | "
            f"{w['unsegmented']:.1f} s | {w['segmented']:.1f} s | {w['ratio']:.3f}x |"
        )
    r = results["ray"]
    print(
        f"\nlocal Ray cluster: ray.init {r['ray_init_s']:.1f} s, then 2 workers up with the model loaded "
        f"{r['workers_ready_s']:.1f} s; {r['frames']} sample frames on 2 workers: {r['job_s']:.1f} s in all"
    )
    m = results["resume"]
    print(
        f"resume of the sample killed at 50% ({m['resumed']} of {m['segments']} segments done): "
        f"{m['resume_s']:.1f} s, against {m['whole_s']:.1f} s whole ({m['resume_s'] / m['whole_s']:.2f}x)"
    )
