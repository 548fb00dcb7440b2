"""File jobs: the segment plan, segments, resume after kill -9 or a full disk, Ray workers, out-of-memory backoff."""

import errno
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

import vidup.jobs.segments
from vidup import load_config, upscale_video
from vidup.errors import ConfigError, EngineMemoryError, OutputWriteError
from vidup.jobs.manifest import job_folder
from vidup.jobs.plan import split_shots
from vidup.metrics import evaluate_video
from vidup.upscaler import Upscaler
from vidup.testing import EngineFactory
from vidup.video.reader import VideoReader

from media import make_clip, packets

NULL = EngineFactory()  # the SR frame path around a network that only resizes: fast, and deterministic


def job_config(**overrides):
    values = {"quiet": True, "size": "256", "job.segment_frames": 30}
    values.update(overrides)
    return load_config(overrides=values)


def video_stream(path: Path) -> list[tuple[int, int, bytes]]:
    """(pts, dts, payload) of every video packet: what 'byte-identical video stream' compares."""
    with av.open(str(path)) as c:
        return [(p.pts, p.dts, bytes(p)) for p in c.demux(c.streams.video[0]) if p.size]


def source_pts_seconds(path: Path) -> list[float]:
    return [round(float(f.pts * f.time_base), 4) for f in VideoReader(path).frames()]


# --- the plan -----------------------------------------------------------------------------------------------------


def test_segments_cover_every_frame_once_end_at_cuts_and_warm_up_only_inside_shots():
    frames, cuts = 700, [0, 60, 100, 110, 650]
    times, pts = [i / 25 for i in range(frames)], list(range(frames))
    segments = split_shots(frames, cuts, 300, 8, times, pts, seekable=True)
    covered = [i for s in segments for i in range(s.first, s.first + s.count)]
    assert covered == list(range(frames))
    starts = {s.first for s in segments}
    for s in segments:
        shot_start = max(c for c in cuts if c <= s.first)
        assert s.count <= 300
        # A boundary is a cut (no warmup) or inside a shot (warmup from the same shot, at most 8 frames).
        assert (s.warmup == 0) == (s.first in cuts) and s.first - s.warmup >= shot_start and s.warmup <= 8
        read = s.first - s.warmup
        assert s.read_from == times[read] and s.first_pts == pts[read]
        # Every cut the segment runs through is declared, counted from its first frame run.
        assert s.cuts == tuple(sorted({0} | {c - read for c in cuts if read <= c < s.first + s.count}))
    assert {0, 110, 650} <= starts and 60 not in starts  # short shots share a segment
    assert [s.count for s in segments if s.first >= 110 and s.first < 650] == [270, 270]  # near-equal pieces
    # Without exact seeking (frames without timestamps, repaired damage) the clip stays one segment.
    (whole,) = split_shots(frames, cuts, 300, 8, times, pts, seekable=False)
    assert (whole.first, whole.count, whole.cuts) == (0, frames, tuple(cuts))


def test_segment_runs_follow_the_plans_cuts_not_the_detector(sample):
    config = load_config(overrides={"quiet": True, "size": "256"})
    frames = [f.rgb for _, f in zip(range(12), VideoReader(sample).frames())]
    upscaler = Upscaler(config, NULL(config))
    upscaler.follow_plan([0, 5])
    motions = list(upscaler.analyse_stream(frames))
    assert [m.cut for m in motions] == [i in (0, 5) for i in range(12)]
    assert all(m.flows is not None for i, m in enumerate(motions) if i not in (0, 5))


# --- resume -------------------------------------------------------------------------------------------------------

KILLED_RUN = """
import sys
from vidup import load_config, upscale_video
from vidup.testing import EngineFactory
config = load_config(overrides={"quiet": True, "size": "256", "job.segment_frames": 30})
upscale_video(sys.argv[1], sys.argv[2], config, engine_factory=EngineFactory(kill_after=45))
"""


@pytest.mark.slow
def test_kill_9_midway_then_rerun_recomputes_only_unfinished_segments_byte_identically(tmp_path, sample):
    whole = upscale_video(sample, tmp_path / "whole.mp4", job_config(), engine_factory=NULL)
    assert (whole.segments, whole.segments_run, whole.segments_resumed) == (4, 4, 0)
    assert not job_folder(tmp_path / "whole.mp4").exists()  # removed on success

    out = tmp_path / "resumed.mp4"
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(sample), str(out)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr  # SIGKILL after 45 frames: segment 0 (30) done, segment 1 midway
    folder = job_folder(out)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert list(manifest["done"]) == ["0"] and not out.exists()

    engine = NULL(job_config())
    report = upscale_video(sample, out, job_config(quiet=False), engine=engine)
    assert (report.segments_resumed, report.segments_run) == (1, 3)
    assert engine.frames == 100 - 30 + 8 + 8  # the 70 unfinished frames and two warmups, nothing more
    assert video_stream(out) == video_stream(tmp_path / "whole.mp4")
    assert not folder.exists()


@pytest.mark.slow
def test_a_changed_config_or_input_starts_fresh_and_says_why(tmp_path, sample, monkeypatch):
    clip = tmp_path / "in.mp4"
    clip.write_bytes(sample.read_bytes())
    out = tmp_path / "out.mp4"

    def interrupted_run(**overrides):
        """A run stopped by a full disk while writing its third segment."""
        real = vidup.jobs.segments.SegmentEncoder._write
        counts = {}

        def full_disk(self, data):
            counts[self.path.name] = counts.get(self.path.name, 0) + 1
            if self.path.name == "segment-00002.vseg":
                raise OutputWriteError(f"writing the segment {self.path} failed: the disk is full")
            return real(self, data)

        monkeypatch.setattr(vidup.jobs.segments.SegmentEncoder, "_write", full_disk)
        with pytest.raises(OutputWriteError, match="2 of 4 segments are done") as error:
            upscale_video(clip, out, job_config(**overrides), engine_factory=NULL)
        monkeypatch.setattr(vidup.jobs.segments.SegmentEncoder, "_write", real)
        assert "\n" not in str(error.value)
        folder = job_folder(out)
        assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "segment-00000.vseg", "segment-00001.vseg"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name, "in.mp4"]  # no output, no temporary file

    interrupted_run()
    report = upscale_video(clip, out, job_config(**{"output.crf": 20}), engine_factory=NULL)
    assert report.segments_resumed == 0 and report.segments_run == 4
    assert any("settings changed (output.crf 18 -> 20)" in note for note in report.notes)

    out.unlink()
    interrupted_run()
    with open(clip, "ab") as f:
        f.write(b"\0")  # the input changed
    report = upscale_video(clip, out, job_config(), engine_factory=NULL)
    assert report.segments_resumed == 0 and any("the input file changed" in note for note in report.notes)

    out.unlink()
    interrupted_run()
    report = upscale_video(clip, out, job_config(**{"job.fresh": True}), engine_factory=NULL)
    assert report.segments_resumed == 0 and any("--fresh" in note for note in report.notes)

    out.unlink()
    interrupted_run()  # then space is freed: the same run resumes, and settings that only change how it runs may differ
    report = upscale_video(clip, out, job_config(pipeline=False, overwrite=True), engine_factory=NULL)
    assert (report.segments_resumed, report.segments_run) == (2, 2)
    whole = upscale_video(clip, tmp_path / "whole.mp4", job_config(), engine_factory=NULL)
    assert video_stream(out) == video_stream(tmp_path / "whole.mp4") and whole.frames == report.frames == 100


def _stop_at_third_segment(monkeypatch, clip, out, config):
    real = vidup.jobs.segments.SegmentEncoder._write

    def full_disk(self, data):
        if self.path.name == "segment-00002.vseg":
            raise OutputWriteError("the disk is full")
        return real(self, data)

    monkeypatch.setattr(vidup.jobs.segments.SegmentEncoder, "_write", full_disk)
    with pytest.raises(OutputWriteError):
        upscale_video(clip, out, config, engine_factory=NULL)
    monkeypatch.setattr(vidup.jobs.segments.SegmentEncoder, "_write", real)


@pytest.mark.slow
def test_auto_is_settled_once_and_a_resume_with_another_settlement_starts_afresh(tmp_path, sample, monkeypatch):
    from vidup.engines.base import settle

    out = tmp_path / "out.mp4"
    _stop_at_third_segment(monkeypatch, sample, out, job_config(device="cpu"))
    settings = json.loads((job_folder(out) / "manifest.json").read_text())["settings"]
    here = settle(job_config(device="cpu"))
    assert settings["precision"] == here.precision != "auto" and settings["temporal.backend"] == "cv2"
    assert settings["sr.batch"] == "1" and settings["device"] == "cpu"
    # "auto" spelled out as what it settles to here is the same job: it resumes
    report = upscale_video(
        sample, out, job_config(device="cpu", precision=here.precision, **{"sr.batch": "1"}), engine_factory=NULL
    )
    assert report.segments_resumed == 2 and report.settled["precision"] == here.precision

    out.unlink()
    _stop_at_third_segment(monkeypatch, sample, out, job_config(device="cpu"))
    other = "fp32" if here.precision == "bf16" else "bf16"
    report = upscale_video(sample, out, job_config(device="cpu", precision=other), engine_factory=NULL)
    assert report.segments_resumed == 0
    assert any(f"settings changed (precision '{here.precision}' -> '{other}')" in n for n in report.notes), report.notes

    out.unlink()
    _stop_at_third_segment(monkeypatch, sample, out, job_config(device="cpu"))
    report = upscale_video(sample, out, job_config(device="cpu", **{"temporal.backend": "torch"}), engine_factory=NULL)
    assert report.segments_resumed == 0
    assert any("temporal.backend 'cv2' -> 'torch'" in n for n in report.notes), report.notes


@pytest.mark.slow
def test_settings_that_cannot_change_this_output_do_not_restart_it(tmp_path, sample, monkeypatch):
    out = tmp_path / "out.mp4"
    _stop_at_third_segment(monkeypatch, sample, out, job_config())
    report = upscale_video(
        sample,
        out,
        job_config(**{"train.lr": 3e-4, "flux.steps": 12, "flux.cache": "first-block"}),
        engine_factory=NULL,
    )
    assert report.segments_resumed == 2, report.notes  # training's and the idle FLUX engine's settings


@pytest.mark.slow
def test_the_plan_and_the_streaming_path_analyse_frames_at_one_resolution(bikes, monkeypatch):
    """bikes (640x272) is above the flow resolution cap: the plan once decoded it smaller than the streaming path
    analysed it, so a borderline cut could fall differently in a preview than in the job."""
    from vidup.jobs.plan import make_plan
    from vidup.video.clip import describe_clip
    from vidup.temporal.state import MotionAnalyser
    from vidup.video.timing import Position
    from vidup.video.reader import probe

    seen = {"plan": set(), "stream": set()}
    where = ["plan"]
    real = MotionAnalyser._for_flow

    def record(self, frame):
        seen[where[0]].add(frame.shape)
        return real(self, frame)

    monkeypatch.setattr(MotionAnalyser, "_for_flow", record)
    config = job_config()
    info = probe(bikes)
    plan = make_plan(info, describe_clip(info, config), config, None, Position.parse("100"))
    where[0] = "stream"
    upscaler = Upscaler(config, NULL(config))
    list(upscaler.analyse_stream(f.rgb for _, f in zip(range(100), VideoReader(bikes).frames())))
    assert seen["plan"] == seen["stream"] == {(272, 640, 3)}
    assert [c for c in plan.cuts if c] == upscaler.temporal.cuts and upscaler.temporal.cuts


@pytest.mark.slow
def test_a_damaged_segment_file_is_recomputed(tmp_path, sample, monkeypatch):
    out = tmp_path / "out.mp4"
    real = vidup.jobs.segments.SegmentEncoder._write

    def full_disk(self, data):
        if self.path.name == "segment-00003.vseg":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(vidup.jobs.segments.SegmentEncoder, "_write", full_disk)
    with pytest.raises(Exception):
        upscale_video(sample, out, job_config(), engine_factory=NULL)
    monkeypatch.undo()
    segment = job_folder(out) / "segment-00001.vseg"
    segment.write_bytes(segment.read_bytes()[:-100])  # bit rot, or a copy cut short
    report = upscale_video(sample, out, job_config(), engine_factory=NULL)
    assert report.segments_resumed == 2 and report.segments_run == 2
    assert any("segment 1" in note and "damaged" in note for note in report.notes)
    assert len(video_stream(out)) == 100


# --- what segmenting keeps ----------------------------------------------------------------------------------------


def test_segments_keep_vfr_pts_and_audio_packets(tmp_path):
    pts = [0, 40, 80, 200, 240, 280, 300, 340, 420, 460, 500, 540, 580, 700, 740, 780]  # ms, irregular
    clip = make_clip(tmp_path / "vfr.mkv", frames=len(pts), size=(64, 48), pts=pts, audio=True, subtitles=True)
    out = tmp_path / "up.mkv"
    report = upscale_video(
        clip, out, job_config(**{"job.segment_frames": 5, "job.warmup_frames": 2}), engine_factory=NULL
    )
    assert report.segments == 4
    assert source_pts_seconds(out) == source_pts_seconds(clip)
    for kind in ("audio", "subtitle"):
        assert packets(out, kind) == packets(clip, kind) and packets(clip, kind)
    clip = make_clip(tmp_path / "vfr.mp4", frames=len(pts), size=(64, 48), pts=pts, audio=True)
    for path in (tmp_path / "a.mp4", tmp_path / "b.mp4"):  # MP4 (global headers, B-frames) as well
        upscale_video(
            clip, path, job_config(**{"job.segment_frames": 5 if path.stem == "a" else 100}), engine_factory=NULL
        )
        assert source_pts_seconds(path) == source_pts_seconds(clip)
    assert packets(tmp_path / "a.mp4", "audio") == packets(tmp_path / "b.mp4", "audio")


def test_a_trim_through_segments_keeps_its_frames_and_audio_window(tmp_path, sample):
    out = tmp_path / "trim.mp4"
    report = upscale_video(sample, out, job_config(start="25", end="75"), engine_factory=NULL)
    assert report.frames == 50 and report.segments == 3  # 25-59 (35 frames: split in two), then 60-74
    times = source_pts_seconds(out)
    assert len(times) == 50 and times[0] == 0.0
    step = 1 / 25
    assert np.allclose(np.diff(times), step, atol=1e-3)
    audio = packets(out, "audio")
    assert audio and audio[0][0] <= 0.05e6 and audio[-1][0] <= 50 * step * 1e6


@pytest.mark.slow
def test_a_seam_inside_a_shot_does_not_flicker(tmp_path, sample):
    """E_warp of the pair across a boundary inside a shot is within 1.5x the median of its neighbours'."""
    out = tmp_path / "seam.mp4"
    config = load_config(overrides={"quiet": True, "size": "512", "end": "60", "job.segment_frames": 30})
    report = upscale_video(sample, out, config)
    assert report.segments == 2
    pairs = dict(evaluate_video(out, input=sample).ewarps)
    seam = pairs[30]  # frames 29 -> 30: the first frame of the second segment
    neighbours = [pairs[i] for i in range(20, 41) if i != 30 and i in pairs]
    assert len(neighbours) >= 16
    assert seam <= 1.5 * float(np.median(neighbours)), (seam, np.median(neighbours))


# --- out of memory ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_out_of_memory_halves_the_tile_and_keeps_every_frame(tmp_path, sample):
    config = job_config(size="512", **{"temporal.enabled": False, "end": "8", "sr.tile": 384})
    # From its third network call, the engine cannot hold a whole 256x144 frame (any input over 200 px).
    report = upscale_video(
        sample, tmp_path / "oom.mp4", config, engine_factory=EngineFactory("model", oom_above=200, oom_from=2)
    )
    assert report.frames == 8 and len(video_stream(tmp_path / "oom.mp4")) == 8
    assert report.warnings == ("out of memory at frame 2: SR tile 384 -> 128 px, for the rest of the segment",)
    assert source_pts_seconds(tmp_path / "oom.mp4") == source_pts_seconds(sample)[:8]

    frames = [f.rgb for _, f in zip(range(4), VideoReader(sample).frames())]
    faulty = Upscaler(config, EngineFactory("model", oom_above=200, oom_from=2)(config))
    small = Upscaler(load_config(overrides={"size": "512", "sr.tile": 128, "temporal.enabled": False}))
    big = Upscaler(config, EngineFactory("model")(config))
    got = [faulty.upscale_frame(f) for f in frames]
    assert all(np.array_equal(got[i], big.upscale_frame(frames[i])) for i in (0, 1))
    assert all(np.array_equal(got[i], small.upscale_frame(frames[i])) for i in (2, 3))  # the retried frame too


@pytest.mark.slow
def test_out_of_memory_with_nothing_left_to_shrink_is_a_clear_error(tmp_path, sample):
    config = job_config(size="512", **{"job.segment_frames": 60})
    with pytest.raises(EngineMemoryError, match="nothing left to shrink") as error:
        upscale_video(sample, tmp_path / "out.mp4", config, engine_factory=EngineFactory(oom_above=1, oom_from=70))
    assert "1 of 2 segments are done" in str(error.value)  # the finished segment is kept for a resume
    assert not (tmp_path / "out.mp4").exists()


def test_batches_shrink_before_tiles():
    config = load_config(overrides={"sr.batch": "4"})
    engine = EngineFactory()(config)
    engine._input_side = 144
    changes = [engine.shrink() for _ in range(6)]
    assert changes == [
        "SR batch 4 -> 2",
        "SR batch 2 -> 1",
        "SR tile whole frame -> 72 px",
        "SR tile 72 -> 36 px",
        None,
        None,
    ]
    engine.set_footprint((4, 0))
    assert engine.footprint() == (4, 0)


# --- Ray ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the scale extra is part of the test install")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_two_ray_workers_write_the_same_video_stream_as_one_local_worker(tmp_path, sample, ray_cluster):
    local = upscale_video(sample, tmp_path / "local.mp4", job_config(), engine_factory=NULL)
    marker = tmp_path / "died-once"
    # One worker dies on its 10th frame (the first time only): its segment is retried on a fresh worker.
    report = upscale_video(
        sample,
        tmp_path / "ray.mp4",
        job_config(**{"job.workers": 2}),
        engine_factory=EngineFactory(kill_after=10, marker=str(marker)),
    )
    assert marker.exists() and report.segments_run == 4 and report.ray_startup is not None
    assert video_stream(tmp_path / "ray.mp4") == video_stream(tmp_path / "local.mp4")
    assert packets(tmp_path / "ray.mp4", "audio") == packets(tmp_path / "local.mp4", "audio")
    assert report.frames == local.frames == 100


@pytest.mark.slow
def test_ray_workers_get_the_input_through_the_object_store(tmp_path, sample, ray_cluster):
    # With --ray-address the input travels to the workers (no shared filesystem); here the cluster is the local one.
    upscale_video(sample, tmp_path / "local.mp4", job_config(end="40"), engine_factory=NULL)
    upscale_video(
        sample,
        tmp_path / "shipped.mp4",
        job_config(end="40", **{"job.workers": 2, "job.ray_address": "auto"}),
        engine_factory=NULL,
    )
    assert video_stream(tmp_path / "shipped.mp4") == video_stream(tmp_path / "local.mp4")


def test_workers_without_ray_name_the_install_command(tmp_path, sample, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    with pytest.raises(ConfigError, match=r"pip install 'vidup\[scale\]'"):
        upscale_video(sample, tmp_path / "out.mp4", job_config(**{"job.workers": 2}), engine_factory=NULL)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("size", [(2, 2), (1, 1)])
def test_tiny_frames_go_through_the_job_path(tmp_path, size):
    """DIS flow refuses frames under 12 px: the pre-pass decides their cuts without it, as the streaming path
    does, instead of failing with an OpenCV error."""
    clip = make_clip(tmp_path / "tiny.mkv", frames=6, size=size, codec="ffv1", audio=False)
    report = upscale_video(clip, tmp_path / "out.mkv", job_config(size="64"), engine_factory=NULL)
    assert report.frames == 6 and report.size == (64, 64)
    assert any("too small for optical flow" in note for note in report.notes)
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


HOLD_THE_LOCK = """
import sys
from pathlib import Path
from vidup.fsutil import FileLock
with FileLock(Path(sys.argv[1]), "test"):
    print("locked", flush=True)
    sys.stdin.read()  # holds the lock until killed
"""


def test_a_second_run_on_the_same_output_is_refused_and_a_dead_runs_lock_is_taken_over(tmp_path, sample):
    from vidup.cli import main
    from click.testing import CliRunner

    out = tmp_path / "out.mp4"
    lock = tmp_path / ".out.mp4.vidup.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"  # the other run holds it (no timing: it said so)
        loaded = []

        def factory(config):
            loaded.append(1)
            return NULL(config)

        result = CliRunner().invoke(
            main,
            ["upscale", str(sample), str(out), "-q", "--size", "256", "--end", "10"],
            obj={"engine_factory": factory},
        )
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.stderr
        assert f"another vidup (pid {holder.pid}) is working on {out}" in lines[0]
        assert not loaded and not out.exists()
    finally:
        holder.kill()  # as a kill -9 would: the OS releases its lock, the file stays behind
        holder.wait()
    assert lock.exists()
    report = upscale_video(sample, out, job_config(end="10"), engine_factory=NULL)
    assert report.frames == 10 and out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # the taken-over lock is gone with the run
