"""Temporal coherence without blur: the rectified history (clamped, reactive, bicubic, detail kept)."""

import cv2
import numpy as np
import torch

from vidup import load_config
from vidup.metrics import detail_energy, detail_per_shot
from vidup.upscaler import Upscaler
from vidup.temporal import torch_ops
from vidup.temporal.flow import warp
from vidup.temporal.seeding import HistoryBlend, blend_high_frequencies, rectified_blend
from vidup.testing import EngineFactory
from vidup.video.reader import VideoReader

BLEND = HistoryBlend()
SIGMA = BLEND.detail_sigma(4)  # a 4x upscale's split, in output px
H, W = 96, 128


def texture(seed: int, h: int = H, w: int = W, amplitude: float = 40.0) -> np.ndarray:
    """Grass-like fine texture around mid grey (what a GAN paints on a pitch)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 1, (h, w, 3)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), 0.8)
    return np.clip(128 + amplitude * noise / noise.std(), 0, 255).astype(np.uint8)


def run_rectified(frames, flows, confidence, interpolation=cv2.INTER_CUBIC, blend=BLEND):
    outputs, previous = [], None
    for frame, flow in zip(frames, flows):
        if previous is None:
            out = frame
        else:
            history = warp(previous, flow, interpolation=interpolation)
            out = rectified_blend(
                frame, history, confidence, blend.weight, SIGMA, blend.radius, blend.reactive, blend.gain_max
            )
        outputs.append(out)
        previous = out
    return outputs


def flicker(frames) -> float:
    return float(
        np.mean([np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() for a, b in zip(frames[1:], frames[:-1])])
    )


def test_a_static_scene_keeps_its_detail_while_its_flicker_falls():
    base = texture(0)
    # Per-frame output: the same scene with detail re-painted each frame (a GAN's per-frame grain).
    frames = [cv2.addWeighted(base, 0.5, texture(100 + i), 0.5, 0) for i in range(50)]
    zero = np.zeros((H, W, 2), np.float32)
    outputs = run_rectified(frames, [zero] * 50, np.ones((H, W), np.float32))
    ratios = [detail_energy(o) / detail_energy(f) for o, f in zip(outputs, frames)]
    assert np.mean(ratios[-17:]) >= 0.9 * np.mean(ratios[1:6]) and min(ratios) >= 0.85
    assert flicker(outputs) < 0.6 * flicker(frames)


def test_a_panning_texture_keeps_its_detail_after_50_frames():
    big = texture(1, H, W + 120)
    step = 1.37  # sub-pixel: every warp resamples
    frames, flows = [], []
    for i in range(50):
        shift = np.float32([[1, 0, -step * i], [0, 1, 0]])
        frames.append(
            cv2.warpAffine(big, shift, (W + 120, H), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)[:, :W]
        )
        flows.append(np.dstack([np.full((H, W), step, np.float32), np.zeros((H, W), np.float32)]))
    confidence = np.ones((H, W), np.float32)
    confidence[:, -8:] = 0  # content entering at the right edge
    outputs = run_rectified(frames, flows, confidence)
    inner = (slice(8, -8), slice(8, -16))
    ratios = [detail_energy(o[inner]) / detail_energy(f[inner]) for o, f in zip(outputs, frames)]
    assert np.mean(ratios[-17:]) >= 0.9 * np.mean(ratios[1:6]) and ratios[-1] >= 0.9
    # The first release's blend (bilinear warp, history's detail taken whole) softens the same pan.
    old, previous = [], None
    for frame, flow in zip(frames, flows):
        out = frame if previous is None else blend_high_frequencies(frame, warp(previous, flow), confidence, 1.0, 1.5)
        old.append(out)
        previous = out
    assert detail_energy(old[-1][inner]) / detail_energy(frames[-1][inner]) < ratios[-1] - 0.1


def test_disocclusions_do_not_ghost():
    background = np.full((H, W, 3), (40, 140, 50), np.uint8)  # pitch
    player = background.copy()
    player[30:70, 40:70] = (230, 30, 30)  # a red shirt that has moved away in the current frame
    confidence = np.ones((H, W), np.float32)  # the worst case: the flow trusts the old position
    out = rectified_blend(
        background, player, confidence, BLEND.weight, SIGMA, BLEND.radius, BLEND.reactive, BLEND.gain_max
    )
    ghost = np.abs(out[30:70, 40:70].astype(int) - background[30:70, 40:70]).max()
    assert ghost <= 2, ghost  # clamped to the current neighbourhood: no red left behind


def test_cuts_reset_the_history(sample):
    config = load_config(overrides={"size": "512", "quiet": True})
    frames = [f.rgb for f in VideoReader(sample).frames()][55:66]  # the sample cuts at frame 60
    on = Upscaler(config, EngineFactory()(config))
    off_config = load_config(overrides={"size": "512", "quiet": True, "temporal.enabled": False})
    off = Upscaler(off_config, EngineFactory()(off_config))
    outs_on = [on.upscale_frame(f) for f in frames]
    outs_off = [off.upscale_frame(f) for f in frames]
    assert np.array_equal(outs_on[5], outs_off[5])  # the first frame of the new shot: nothing from before
    assert not np.array_equal(outs_on[6], outs_off[6])  # and the history starts again after it


def test_the_device_path_matches_the_array_path():
    current = cv2.addWeighted(texture(3), 0.5, texture(4), 0.5, 0)
    history = texture(3)
    confidence = np.random.default_rng(0).uniform(0, 1, (H // 4, W // 4)).astype(np.float32)
    expected = rectified_blend(
        current, history, confidence, BLEND.weight, SIGMA, BLEND.radius, BLEND.reactive, BLEND.gain_max
    )
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255  # noqa: E731
    got = torch_ops.rectified_blend(
        as_tensor(current),
        as_tensor(history),
        torch.from_numpy(confidence)[None, None],
        BLEND.weight,
        SIGMA,
        BLEND.radius,
        BLEND.reactive,
        BLEND.gain_max,
        codes=255,
    )
    got = (got[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    difference = np.abs(got.astype(int) - expected)
    assert np.mean(difference <= 1) >= 0.995 and difference.max() <= 3


def test_the_8bit_fixed_point_path_follows_the_float_formula():
    """8-bit frames take an int16 path; 16-bit frames (the same picture times 257) the float formula. Both ways
    agree within a few codes of 8 bits, for every blend setting that changes the arithmetic."""
    rng = np.random.default_rng(1)
    current = cv2.addWeighted(texture(5), 0.5, texture(6), 0.5, 0)
    history = texture(5)
    confidence = rng.uniform(0, 1, (H // 4, W // 4)).astype(np.float32)
    for gain_max, sharpen, sigma in ((2.0, 0.0, SIGMA), (1.0, 0.0, 1.5), (2.0, 0.5, 1.5)):
        args = (BLEND.weight, sigma, BLEND.radius, BLEND.reactive, gain_max, sharpen)
        fixed = rectified_blend(current, history, confidence, *args)
        wide = rectified_blend(current.astype(np.uint16) * 257, history.astype(np.uint16) * 257, confidence, *args)
        assert fixed.dtype == np.uint8 and wide.dtype == np.uint16
        difference = np.abs(fixed.astype(np.float32) - wide.astype(np.float32) / 257)
        assert difference.max() <= 3 and difference.mean() < 0.3, (gain_max, sharpen, difference.max())
        assert np.abs(fixed.astype(int) - current).mean() > 2  # and the blend did something


def test_the_detail_split_follows_the_upscale_factor(sample, monkeypatch):
    """The rectified split is set in input pixels: a 4x upscale accumulates detail finer than 3 output px, a 2x one
    finer than 1.5; never under one output pixel."""
    from vidup.temporal import seeding

    assert HistoryBlend(input_sigma=0.75).detail_sigma(4) == 3.0
    assert HistoryBlend(input_sigma=0.75).detail_sigma(1.2) == 1.0
    # proportionate at extreme factors: 16x16 to 8192x8192 would split at 384 px, a blur costing minutes a frame
    assert HistoryBlend(input_sigma=0.75).detail_sigma(512) == HistoryBlend().max_sigma == 12.0
    seen = []
    original = seeding.rectified_blend
    monkeypatch.setattr(seeding, "rectified_blend", lambda *a, **k: seen.append(a[4]) or original(*a, **k))
    frames = [f.rgb for f, _ in zip(VideoReader(sample).frames(), range(3))]
    for size in ("1024", "512"):
        config = load_config(overrides={"size": size, "quiet": True})
        upscaler = Upscaler(config, EngineFactory()(config))
        for frame in frames:
            upscaler.upscale_frame(frame)
    assert seen == [3.0, 3.0, 1.5, 1.5]


def test_detail_per_shot_reports_the_minimum_and_the_decay():
    ratios = [1.0] * 6 + [0.8] * 14 + [1.0] * 10  # shot 1 (20 frames) decays to 0.8; shot 2 holds
    minimum, decay = detail_per_shot(ratios, [20])
    assert minimum == 0.8 and abs(decay - 0.8) < 1e-9
