"""Quality and temporal-stability metrics, streamed over frame pairs (memory does not grow with clip length).

- PSNR and SSIM on Y (BT.709 luma) against a reference.
- E_warp (Lai et al. 2018): sum M * ||O_t - warp(O_t-1)||^2 / sum M over consecutive pairs within a shot, RGB in
  [0, 1], flow from the reference (or the input), M = forward-backward consistent pixels; reported x 1e-3.
- tOF (TecoGAN): mean L2 distance between the output's optical flow and the reference's.
- flicker: mean absolute change of 16x16 block means of Y between consecutive frames, in blocks that do not
  move (flow under half a pixel) - detail that shimmers in place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from vidup.temporal.flow import FlowEstimator, consistent_flow, flows_both_ways, luma, upsample_flow, warp
from vidup.temporal.shots import ShotDetector
from vidup.video.reader import VideoReader

BLOCK = 16


def y_channel(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float32)
    return 0.2126 * f[..., 0] + 0.7152 * f[..., 1] + 0.0722 * f[..., 2]


PSNR_CAP = 100.0  # identical frames: a finite ceiling keeps clip averages meaningful


def psnr_y(output: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((y_channel(output) - y_channel(reference)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * np.log10(255.0**2 / mse))


def ssim_y(output: np.ndarray, reference: np.ndarray) -> float:
    """SSIM (Wang et al. 2004) on Y with an 11x11 Gaussian window, sigma 1.5."""
    a, b = y_channel(output), y_channel(reference)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = lambda x: cv2.GaussianBlur(x, (11, 11), 1.5)  # noqa: E731
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean())


def warping_error(previous: np.ndarray, current: np.ndarray, flow_cur_to_prev: np.ndarray, mask: np.ndarray) -> float:
    diff = (current.astype(np.float32) - warp(previous, flow_cur_to_prev).astype(np.float32)) / 255.0
    weight = mask.astype(np.float32)
    return float(((diff**2).sum(-1) * weight).sum() / max(weight.sum(), 1.0))


def _blocks(plane: np.ndarray) -> np.ndarray:
    """(H, W) -> (H/16, 16, W/16, 16) over the whole blocks; reduce over axes (1, 3)."""
    h, w = (plane.shape[0] // BLOCK) * BLOCK, (plane.shape[1] // BLOCK) * BLOCK
    return plane[:h, :w].reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK)


def block_means(rgb: np.ndarray) -> np.ndarray:
    return _blocks(y_channel(rgb)).mean(axis=(1, 3))


def static_blocks(flow: np.ndarray) -> np.ndarray:
    return _blocks(np.sqrt((flow**2).sum(-1))).max(axis=(1, 3)) < 0.5


@dataclass
class TemporalReport:
    frames: int = 0
    pairs: int = 0
    cuts: list[int] = field(default_factory=list)
    psnr_y: float | None = None
    ssim_y: float | None = None
    ewarp_x1e3: float | None = None
    tof: float | None = None
    flicker: float | None = None
    ewarps: list[tuple[int, float]] = field(default_factory=list)  # (frame, E_warp x1e-3 of it and the one before)
    # Detail: high-pass energy (grey minus a sigma-1.5 blur, mean absolute) against a per-frame output (or the
    # input upscaled), frame by frame; per shot its minimum and its decay (mean over the shot's last third over
    # the mean over its frames 2-6); against the ground truth when there is one.
    detail_against: str | None = None  # "per-frame output" | "input upscaled"
    detail_ratio: float | None = None
    detail_min: float | None = None  # the lowest per-shot minimum
    detail_decay: float | None = None  # the worst shot's decay (1: none)
    detail_vs_truth: float | None = None
    detail_by_frame: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        rows = [("frames", f"{self.frames}"), ("pairs within shots", f"{self.pairs}"), ("cuts", f"{self.cuts}")]
        against = f" vs {self.detail_against}" if self.detail_against else ""
        for name, value, fmt in (
            ("PSNR-Y (dB)", self.psnr_y, "{:.2f}"),
            ("SSIM-Y", self.ssim_y, "{:.4f}"),
            ("E_warp (x1e-3)", self.ewarp_x1e3, "{:.3f}"),
            ("tOF", self.tof, "{:.3f}"),
            ("flicker", self.flicker, "{:.3f}"),
            (f"detail{against}", self.detail_ratio, "{:.3f}"),
            ("detail, lowest in a shot", self.detail_min, "{:.3f}"),
            ("detail decay (worst shot)", self.detail_decay, "{:.3f}"),
            ("detail vs reference", self.detail_vs_truth, "{:.3f}"),
        ):
            rows.append((name, "-" if value is None else fmt.format(value)))
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


DETAIL_SIGMA = 1.5


def detail_energy(rgb: np.ndarray) -> float:
    """Mean absolute high-pass energy of the grey image (minus a sigma-1.5 blur), in 8-bit units."""
    grey = y_channel(rgb)
    return float(np.abs(grey - cv2.GaussianBlur(grey, (0, 0), DETAIL_SIGMA)).mean())


def detail_per_shot(ratios: list[float], cuts: list[int]) -> tuple[float, float]:
    """(lowest per-shot minimum, worst per-shot decay): decay is the mean over a shot's last third over the mean
    over its frames 2-6 (shots too short for both are left out of the decay)."""
    bounds = [0, *cuts, len(ratios)]
    minimum, decay = float("inf"), float("inf")
    for a, b in zip(bounds[:-1], bounds[1:]):
        shot = ratios[a:b]
        if not shot:
            continue
        minimum = min(minimum, min(shot))
        if len(shot) >= 9:
            decay = min(decay, float(np.mean(shot[len(shot) - len(shot) // 3 :]) / np.mean(shot[1:6])))
    return minimum, (decay if decay != float("inf") else 1.0)


def evaluate(
    outputs: Iterable[np.ndarray],
    references: Iterable[np.ndarray] | None = None,
    inputs: Iterable[np.ndarray] | None = None,
    flow_preset: str = "medium",
    per_frame: Iterable[np.ndarray] | None = None,
) -> TemporalReport:
    """Stream over the output frames (with the reference, input and per-frame output alongside) and compute every
    metric the given material allows. Motion comes from the reference if given, else from the input, else the
    output. Detail is measured against `per_frame` (the same engine without temporal coherence) if given, else
    against the input upscaled (bicubic)."""
    # the instrument stays fixed (the preset's own field, the detector's defaults) whatever a run was set to
    estimator, shots = FlowEstimator(flow_preset), ShotDetector()
    report = TemporalReport()
    psnrs, ssims, ewarps, tofs, flickers = [], [], [], [], []
    out_energy, ref_energy = [], []
    report.detail_against = "per-frame output" if per_frame is not None else "input upscaled" if inputs else None
    prev_out = prev_guide = None
    for out, ref, inp, single in zip_longest(outputs, references or (), inputs or (), per_frame or ()):
        if out is None:
            break
        h, w = out.shape[:2]
        basis = (
            single
            if single is not None
            else (cv2.resize(inp, (w, h), interpolation=cv2.INTER_CUBIC) if inp is not None else None)
        )
        energy = detail_energy(out)
        if basis is not None:
            report.detail_by_frame.append(energy / max(detail_energy(basis), 1e-6))
        if ref is not None:
            out_energy.append(energy)
        if ref is not None and ref.shape[:2] != (h, w):
            ref = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA)
        guide = ref if ref is not None else inp if inp is not None else out  # what motion is measured on
        if ref is not None:
            ref_energy.append(detail_energy(ref))
            psnrs.append(psnr_y(out, ref))
            ssims.append(ssim_y(out, ref))
        guide_flows: tuple[np.ndarray, np.ndarray] | None = None  # computed once, by whichever needs it first

        def motion_explained() -> float:
            nonlocal guide_flows
            guide_flows = flows_both_ways(estimator, prev_guide, guide)
            return float(consistent_flow(*guide_flows).mean())

        comparable = prev_guide is not None and prev_guide.shape == guide.shape
        cut = shots.is_cut(guide, motion_explained if comparable else None)
        if cut and report.frames:
            report.cuts.append(report.frames)
        if not cut and prev_out is not None:
            guide_flows = guide_flows or flows_both_ways(estimator, prev_guide, guide)
            f_cp, f_pc = guide_flows
            if f_cp.shape[:2] != (h, w):
                f_cp, f_pc = upsample_flow(f_cp, w, h), upsample_flow(f_pc, w, h)
            ewarps.append(warping_error(prev_out, out, f_cp, consistent_flow(f_cp, f_pc)))
            report.ewarps.append((report.frames, 1e3 * ewarps[-1]))
            flicker_mask = static_blocks(f_cp)
            if flicker_mask.any():
                flickers.append(float(np.abs(block_means(out) - block_means(prev_out))[flicker_mask].mean()))
            if ref is not None:  # then the guide is the reference: its forward flow is already there
                flow_out = estimator(luma(prev_out), luma(out))
                tofs.append(float(np.sqrt(((flow_out - guide_flows[1]) ** 2).sum(-1)).mean()))
            report.pairs += 1
        prev_out, prev_guide = out, guide
        report.frames += 1
    report.psnr_y, report.ssim_y = _mean(psnrs), _mean(ssims)
    report.ewarp_x1e3 = None if not ewarps else 1e3 * float(np.mean(ewarps))
    report.tof, report.flicker = _mean(tofs), _mean(flickers)
    if report.detail_by_frame:
        report.detail_ratio = _mean(report.detail_by_frame)
        report.detail_min, report.detail_decay = detail_per_shot(report.detail_by_frame, report.cuts)
    if ref_energy:
        report.detail_vs_truth = float(np.mean(out_energy) / max(np.mean(ref_energy), 1e-6))
    return report


def video_frames(path: str | Path) -> Iterable[np.ndarray]:
    return (frame.rgb for frame in VideoReader(path).frames())


def evaluate_video(
    output: str | Path,
    reference: str | Path | None = None,
    input: str | Path | None = None,
    flow_preset: str = "medium",
    per_frame: str | Path | None = None,
) -> TemporalReport:
    return evaluate(
        video_frames(output),
        video_frames(reference) if reference else None,
        video_frames(input) if input else None,
        flow_preset,
        video_frames(per_frame) if per_frame else None,
    )


def report_json(report: TemporalReport) -> str:
    return json.dumps(report.as_dict(), indent=2)
