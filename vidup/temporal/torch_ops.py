"""The frame path's image operations in torch, for frames that live on the network's device (a GPU): resizing,
flow upsampling, backward warping, Gaussian blur, the colour anchor and the temporal blend. Each follows the
OpenCV operation the CPU path uses (cv2.resize INTER_LINEAR / INTER_AREA, cv2.remap with replicated borders,
cv2.GaussianBlur's kernel and reflect-101 borders), so the two paths agree within a code (tested).

Images are (B, C, H, W) float tensors on the scale of the frame dtype's codes divided by its peak ([0, 1]).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidup.temporal.history_constants import ENERGY_SIGMA_FACTOR, FRACTION, RANGE_FLOOR


def resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Area when shrinking (cv2 INTER_AREA for whole factors), bicubic when enlarging (the CPU path's Lanczos has
    no torch equivalent)."""
    h, w = x.shape[-2:]
    if (w, h) == (width, height):
        return x
    if width * height < w * h:
        return F.interpolate(x, size=(height, width), mode="area")
    return F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)


def bilinear(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """cv2.resize INTER_LINEAR: half-pixel centres, edges clamped."""
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


@lru_cache(maxsize=8)
def _kernel(sigma: float, eight_bit: bool = False) -> np.ndarray:
    size = int(round(sigma * (3 if eight_bit else 4) * 2 + 1)) | 1  # cv2's rule: 3 sigma for 8-bit images, else 4
    return cv2.getGaussianKernel(size, sigma).astype(np.float32).ravel()


def gaussian_blur(x: torch.Tensor, sigma: float, eight_bit: bool = False) -> torch.Tensor:
    """Separable Gaussian, cv2's kernel (for an 8-bit image with `eight_bit`), reflect-101 borders (cv2.GaussianBlur's
    default)."""
    k = torch.from_numpy(_kernel(sigma, eight_bit)).to(x.device, x.dtype)
    c, pad = x.shape[1], len(k) // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def upsample_flow(flow: np.ndarray | torch.Tensor, width: int, height: int, device) -> torch.Tensor:
    """(h, w, 2) flow in pixels -> (1, 2, height, width) on `device`, vectors scaled with the size."""
    flow = torch.as_tensor(np.ascontiguousarray(flow) if isinstance(flow, np.ndarray) else flow)
    h, w = flow.shape[:2]
    scaled = flow.to(device, torch.float32) * torch.tensor([width / w, height / h], device=device)
    return bilinear(scaled.permute(2, 0, 1)[None], width, height)


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """out(p) = image(p + flow(p)), bilinear, borders replicated (cv2.remap BORDER_REPLICATE). flow: (1, 2, H, W)."""
    _, _, h, w = image.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=image.device, dtype=torch.float32),
        torch.arange(w, device=image.device, dtype=torch.float32),
        indexing="ij",
    )
    gx = (xs + flow[0, 0]) / max(w - 1, 1) * 2 - 1
    gy = (ys + flow[0, 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1)[None].to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode="border", align_corners=True)


def anchor_to_input(
    output: torch.Tensor, small: torch.Tensor, sigma: float, codes: float | None = None
) -> torch.Tensor:
    """output + upsample(blur(small) - blur(area-downsample(output))): the SR colour anchor. `codes` (the frame
    dtype's peak) rounds the downsampled image to codes, as OpenCV's integer resize does."""
    h, w = small.shape[-2:]
    down = resize(output, w, h)
    if codes:
        down = (down * codes).round_() / codes
    delta = gaussian_blur(small, sigma) - gaussian_blur(down, sigma)
    return output + bilinear(delta, output.shape[-1], output.shape[-2])


def blend_high_frequencies(
    current: torch.Tensor,
    warped: torch.Tensor,
    confidence: torch.Tensor,
    strength: float,
    sigma: float,
    codes: float | None = None,
) -> torch.Tensor:
    """current + strength * confidence * highpass(warped - current); confidence (1, 1, h, w), any size.

    With `codes` = 255 it rounds where the CPU path's fixed-point arithmetic does (the blurred difference, 8-bit
    weights before and after resizing, the weighted detail), so 8-bit results match it within a code."""
    difference = warped - current
    blurred = gaussian_blur(difference, sigma)
    height, width = current.shape[-2:]
    if codes != 255:
        weight = bilinear(confidence, width, height)
        return current + strength * weight * (difference - blurred)
    blurred = (blurred * codes).round_() / codes
    weight = bilinear((confidence * 255 * strength).round_().clamp_(0, 255), width, height).round_() / 255
    return current + (weight * (difference - blurred) * codes).round_() / codes


def rectified_blend(
    current: torch.Tensor,
    history: torch.Tensor,
    confidence: torch.Tensor,
    weight: float,
    sigma: float,
    radius: int,
    reactive: float,
    gain_max: float,
    sharpen: float = 0.0,
    codes: float | None = None,
) -> torch.Tensor:
    """`vidup.temporal.seeding.rectified_blend` on (1, 3, H, W) tensors in [0, 1] (confidence: 1, 1, h, w).

    With `codes` = 255 it rounds where the CPU path's 8-bit fixed point does (the warped history, both blurs, the
    weights, the weighted detail, the energy maps and the gain), so 8-bit results match it within a code or two."""
    fixed = codes == 255

    def q(x: torch.Tensor, steps: float = 255.0) -> torch.Tensor:
        return (x * steps).round_() / steps if fixed else x

    h, w = current.shape[-2:]
    if confidence.shape[-2:] != (h, w):
        confidence = bilinear(confidence, w, h)
    history = q(history)  # the CPU path's warp writes 8-bit codes
    base = q(gaussian_blur(current, sigma, fixed))
    detail = current - base
    past = history - q(gaussian_blur(history, sigma, fixed))
    if sharpen:
        past = q(past * (1.0 + sharpen))
    size = 2 * radius + 1
    low = -F.max_pool2d(-detail, size, stride=1, padding=radius)
    high = F.max_pool2d(detail, size, stride=1, padding=radius)
    clamped = torch.minimum(torch.maximum(past, low), high)
    moved = (past - clamped).abs().mean(1, keepdim=True)
    floor = round(3 * RANGE_FLOOR * 255) / (3 * 255) if fixed else RANGE_FLOOR
    span = (high - low).mean(1, keepdim=True) + floor
    alpha = q(weight * confidence * (1.0 - reactive * moved / span).clamp(0.0, 1.0))
    blended = detail + q(alpha * (clamped - detail), 255.0 * FRACTION)
    if gain_max > 1.0:
        energy_sigma = ENERGY_SIGMA_FACTOR * sigma
        target = _local_energy(detail, energy_sigma, fixed)
        actual = _local_energy(blended, energy_sigma, fixed)
        if fixed:  # the CPU path carries the gain as 8-bit codes of gain_max / 255, at the small size
            code = 255.0 / gain_max
            small = (target / (actual + 1e-3)).clamp(1.0, gain_max)
            gain = (bilinear((small * code).round_(), w, h)).round_() / code
            return base + q(blended * gain, 255.0 * FRACTION)
        blended = blended * bilinear((target / (actual + 1e-3)).clamp(1.0, gain_max), w, h)
    return base + blended


def _local_energy(detail: torch.Tensor, sigma: float, fixed: bool = False) -> torch.Tensor:
    """As `vidup.temporal.seeding._local_energy`, left at the small size (a quarter, for frames of 64 px and
    more). `fixed`: the CPU path's 8-bit magnitudes (rounded at full size, and again after area averaging)."""
    h, w = detail.shape[-2:]
    factor = 1 if min(h, w) < 64 else 4
    magnitude = detail.abs()
    if fixed:
        magnitude = (magnitude * 255).round_() / 255  # the CPU path takes 8-bit magnitudes
    if factor > 1:
        magnitude = F.interpolate(magnitude, size=(h // factor, w // factor), mode="area")
    if fixed:
        magnitude = (magnitude * 255).round_() / 255
    return gaussian_blur(magnitude.mean(1, keepdim=True), sigma / factor)
