"""The fast path: the torch frame path against the OpenCV one, batched against single-frame network calls, the
threaded pipeline against the serial loop, and the pipeline's order, errors and stops."""

import contextlib
import threading
import time

import numpy as np
import pytest

import vidup.api
from vidup.config import load_config
from vidup.engines.sr import SREngine
from vidup.pipeline import run_pipeline
from vidup.upscaler import Upscaler
from media import decoded, make_clip


@pytest.fixture(scope="module")
def sample_frames(sample):
    return decoded(sample)[40:52]  # a pan with players


def engines(backend_a: str, backend_b: str, **overrides):
    made = []
    for backend in (backend_a, backend_b):
        config = load_config(overrides={"temporal.backend": backend, **overrides})
        made.append((config, SREngine.from_config(config)))
    return made


@pytest.mark.gpu
@pytest.mark.slow
def test_torch_frame_path_matches_the_opencv_path(sample_frames):
    """Each operation agrees within one code (1/255, the next test). A whole frame chains two rounded operations
    (anchor, blend), so given the same prior 99.9% of its values agree within one code and none differ by more
    than two. Run each path on its own, the prior is each path's own previous output and the differences feed
    back through the blend: a bounded drift."""
    from vidup.temporal.state import TemporalTracker

    (_, cv), (_, on_torch) = engines("cv2", "torch", **{"temporal.history.mode": "highpass"})
    assert not cv.tensor_path and on_torch.tensor_path
    tracker = TemporalTracker()
    for frame in sample_frames:
        prior = tracker.prior_for(frame, (1024, 576))
        ra, rb = cv.upscale(frame, (1024, 576), prior), on_torch.upscale(frame, (1024, 576), prior)
        a, b = ra.image, rb.image
        difference = np.abs(a.astype(int) - b)
        assert difference.max() <= 2 and (difference > 1).mean() < 1e-3
        tracker.commit(a)
    assert ra.stages()[-1].name == rb.stages()[-1].name == "temporal blend"  # the blend ran on both paths
    (config_cv, cv), (config_torch, on_torch) = engines("cv2", "torch", **{"temporal.history.mode": "highpass"})
    runs = [
        list(Upscaler(config, engine).upscale(sample_frames))
        for config, engine in ((config_cv, cv), (config_torch, on_torch))
    ]
    drift = [np.abs(a.astype(int) - b) for a, b in zip(*runs)]
    assert max(d.max() for d in drift) <= 6 and max(d.mean() for d in drift) < 0.5


@pytest.mark.gpu
@pytest.mark.slow
def test_torch_rectified_history_matches_the_opencv_path(sample_frames):
    """The twin rounds where the CPU path's 8-bit fixed point does. What is left: OpenCV's 8-bit Gaussian blur is
    itself fixed point (one code off an exactly rounded blur on about 1.5% of pixels) and the bicubic warps differ
    by a code at a few edges; the clamp and the detail gain (up to 2x) can carry such a code to two or three.
    So: 99.8% of values within one code, 99.99% within two, a mean difference under a tenth of a code."""
    from vidup.temporal.state import TemporalTracker

    (_, cv), (_, on_torch) = engines("cv2", "torch")
    tracker = TemporalTracker()
    for frame in sample_frames:
        prior = tracker.prior_for(frame, (1024, 576))
        ra, rb = cv.upscale(frame, (1024, 576), prior), on_torch.upscale(frame, (1024, 576), prior)
        a, b = ra.image, rb.image
        difference = np.abs(a.astype(int) - b)
        assert (difference > 1).mean() < 2e-3 and (difference > 2).mean() < 1e-4 and difference.mean() < 0.1
        tracker.commit(a)
    assert ra.stages()[-1].name == rb.stages()[-1].name == "temporal blend"


@pytest.mark.gpu
def test_torch_blend_and_warp_match_opencv_on_one_step():
    import cv2
    import torch

    from vidup.temporal import torch_ops
    from vidup.temporal.flow import upsample_flow, warp
    from vidup.engines.anchor import anchor_to_input
    from vidup.temporal.seeding import blend_high_frequencies

    rng = np.random.default_rng(0)
    small = cv2.resize((rng.random((18, 32, 3)) * 255).astype(np.uint8), (128, 72), interpolation=cv2.INTER_CUBIC)
    big = cv2.resize(small, (512, 288), interpolation=cv2.INTER_CUBIC)
    previous = np.roll(big, 3, axis=1)
    flow = (rng.random((72, 128, 2)).astype(np.float32) - 0.5) * 2
    confidence = rng.random((72, 128)).astype(np.float32)
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    back = lambda t: (t[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()  # noqa: E731

    warped_cv = warp(previous, upsample_flow(flow, 512, 288))
    warped_torch = torch_ops.warp(as_tensor(previous), torch_ops.upsample_flow(flow, 512, 288, "cpu"))
    assert np.abs(back(warped_torch).astype(int) - warped_cv).max() <= 1
    blended_cv = blend_high_frequencies(big, warped_cv, confidence, 1.0, 1.5)
    blended_torch = torch_ops.blend_high_frequencies(
        as_tensor(big), as_tensor(warped_cv), torch.from_numpy(confidence)[None, None], 1.0, 1.5, 255
    )
    assert np.abs(back(blended_torch).astype(int) - blended_cv).max() <= 1
    anchored_cv = anchor_to_input(big, small, 1.0)
    anchored_torch = torch_ops.anchor_to_input(as_tensor(big), as_tensor(small), 1.0, 255)
    assert np.abs(back(anchored_torch).astype(int) - anchored_cv).max() <= 1


def test_the_lean_blend_stays_within_a_code_of_the_float_formula():
    import cv2

    from vidup.pixels import high_frequencies
    from vidup.temporal.seeding import blend_high_frequencies

    rng = np.random.default_rng(1)
    current = (rng.random((288, 512, 3)) * 255).astype(np.uint8)
    warped = np.clip(current.astype(int) + rng.normal(0, 30, current.shape), 0, 255).astype(np.uint8)
    confidence = rng.random((72, 128)).astype(np.float32)
    weight = cv2.resize(confidence, (512, 288), interpolation=cv2.INTER_LINEAR)
    exact = current + weight[..., None] * high_frequencies(warped.astype(np.float32) - current, 1.5)
    exact = np.clip(exact + 0.5, 0, 255).astype(np.uint8)
    lean = blend_high_frequencies(current, warped, confidence, 1.0, 1.5)
    assert np.abs(lean.astype(int) - exact).max() <= 1


def test_batched_network_gives_the_single_frame_results(sample_frames):
    config = load_config()
    single, batched = SREngine.from_config(config), SREngine.from_config(config)
    single.batch, batched.batch = 1, 4
    frames = sample_frames[:6]
    one_by_one = [single.super_resolve(f) for f in frames]
    together = [single._to_host(t, np.uint8) for t in batched.network(frames)]
    for a, b in zip(one_by_one, together):
        assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-3


@pytest.mark.slow
def test_batched_upscaler_matches_frame_by_frame(sample_frames):
    outs = {}
    for batch in (1, 4):
        config = load_config(overrides={"sr.batch": batch})
        upscaler = Upscaler(config)
        outs[batch] = list(upscaler.upscale_stream((f, None) for f in sample_frames))
        assert len(outs[batch]) == len(sample_frames)
    for a, b in zip(outs[1], outs[4]):
        assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 1e-3


@pytest.mark.slow
def test_pipeline_and_serial_runs_write_the_same_video(tmp_path, sample, sr_engine, monkeypatch):
    from media import decoded as decode_all

    outs = {}
    for overlap in (False, True):
        config = load_config(overrides={"quiet": True, "end": "30", "pipeline": overlap})
        path = tmp_path / f"{overlap}.mp4"
        report = vidup.api.upscale_video(sample, path, config, engine=sr_engine)
        assert report.frames == 30
        outs[overlap] = decode_all(path)
    assert all(np.array_equal(a, b) for a, b in zip(outs[False], outs[True]))


def test_pipeline_keeps_order_and_batches():
    def slow_square(items):
        for x in items:
            time.sleep(0.001 * (x % 3))
            yield x * x

    def pairs(items):
        batch = []
        for x in items:
            batch.append(x)
            if len(batch) == 2:
                yield tuple(batch)
                batch = []
        if batch:
            yield tuple(batch)

    assert list(run_pipeline(range(9), slow_square, pairs)) == [(0, 1), (4, 9), (16, 25), (36, 49), (64,)]


def test_an_error_in_any_stage_stops_every_stage_and_is_raised_as_it_was():
    produced = []

    def source():
        for i in range(1000):
            produced.append(i)
            yield i

    def failing(items):
        for x in items:
            if x == 5:
                raise ValueError("stage two broke at 5")
            yield x

    seen = []
    with pytest.raises(ValueError, match="stage two broke at 5"):
        for x in run_pipeline(source(), failing, lambda items: (x + 1 for x in items)):
            seen.append(x)
    assert seen == [1, 2, 3, 4, 5]
    # the pipeline joins its stages before the error leaves it: no waiting here
    assert len(produced) < 20  # the source stopped instead of decoding on
    assert not [t for t in threading.enumerate() if t.name.startswith("vidup-")]


def test_leaving_early_stops_the_stages():
    taken = []
    with contextlib.closing(run_pipeline(iter(range(10_000)), lambda items: (x for x in items))) as items:
        for x in items:
            taken.append(x)
            if x == 3:
                break
    # closing the pipeline joins its stages: no waiting here
    assert taken == [0, 1, 2, 3] and not [t for t in threading.enumerate() if t.name.startswith("vidup-")]


def test_a_reader_error_midway_surfaces_through_the_pipeline(tmp_path, sr_engine, monkeypatch):
    from vidup.errors import CorruptInputError

    clip = make_clip(tmp_path / "in.mkv", frames=40)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(CorruptInputError, match="frames decoded"):
        vidup.api.upscale_video(
            cut, tmp_path / "out.mkv", load_config(overrides={"quiet": True, "size": "128"}), engine=sr_engine
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mkv", "in.mkv"]


def test_parallel_flow_gives_the_sequential_motions(bikes):
    from vidup.temporal.state import MotionAnalyser
    from vidup.video import VideoReader

    frames = [f.rgb for f, _ in zip(VideoReader(bikes).frames(), range(40))]  # a cut at 30
    analyser = MotionAnalyser()
    sequential = [analyser.analyse(f) for f in frames]
    parallel_analyser = MotionAnalyser()
    parallel = list(parallel_analyser.analyse_stream(frames, workers=3))
    assert analyser.cuts == parallel_analyser.cuts == [30]
    assert [m.cut for m in parallel] == [m.cut for m in sequential]
    for a, b in zip(sequential, parallel):
        assert (a.flows is None) == (b.flows is None)
        if a.flows is not None:
            assert np.array_equal(a.flows.cur_to_prev, b.flows.cur_to_prev)
            assert np.array_equal(a.flows.confidence, b.flows.confidence)


@pytest.mark.slow
def test_pipeline_with_flow_workers_writes_the_serial_video(tmp_path, sample, sr_engine, monkeypatch):
    from media import decoded as decode_all

    outs = {}
    for overlap, workers in ((False, "1"), (True, "3")):
        config = load_config(
            overrides={"quiet": True, "end": "20", "pipeline": overlap, "temporal.flow.workers": workers}
        )
        vidup.api.upscale_video(sample, tmp_path / f"{overlap}.mp4", config, engine=sr_engine)
        outs[overlap] = decode_all(tmp_path / f"{overlap}.mp4")
    assert len(outs[True]) == 20 and all(np.array_equal(a, b) for a, b in zip(outs[False], outs[True]))
