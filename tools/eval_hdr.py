"""Is running the SR engine on HDR code values good enough? Measured on HLG and PQ versions of the sample's
ground truth, against Lanczos and, for PQ, against the display-referred working space (`--pq-working display`).

SDR rows give the yardstick: the same render and pipeline without HDR. Ground truth: the sample's 1024x576 render
(BT.709 SDR) lifted to HDR the way a grade would: SDR white at
203 cd/m2 (ITU-R BT.2408), highlights above 80% of white expanded up to 1000 cd/m2, BT.2020 primaries, then PQ
or HLG code values at 16 bits. Inputs: ground truth area-downscaled x4 in code values (as a broadcast scaler
would). Metrics: PSNR of the code values (for PQ, a perceptually uniform scale), and PSNR of display light
through a BT.1886 gamma over 0-1000 cd/m2 (what the picture looks like).

    python tools/eval_hdr.py [--frames 10]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

PEAK = 1000.0
WHITE = 203.0


def sdr_to_nits(rgb8: np.ndarray) -> np.ndarray:
    from vidup.video.hdr import BT2020_TO_BT709

    linear = np.power(rgb8.astype(np.float32) / 255.0, 2.4)
    nits = WHITE * linear + np.clip((linear - 0.8) / 0.2, 0, 1) * (PEAK - WHITE) * linear
    return np.clip(nits @ np.linalg.inv(BT2020_TO_BT709).T, 0, None)  # BT.709 light in BT.2020 primaries


def nits_to_hlg(nits: np.ndarray) -> np.ndarray:
    from vidup.video.hdr import HLG_A, HLG_B, HLG_C, LUMA_2020

    # inverse OOTF (gamma 1.2 at 1000 cd/m2), then the OETF
    luma = np.maximum((nits / PEAK * LUMA_2020).sum(-1, keepdims=True), 1e-9)
    scene = np.power(luma, (1 - 1.2) / 1.2) * nits / PEAK
    scene = np.clip(scene, 0, 1)
    return np.where(scene <= 1 / 12, np.sqrt(3 * scene), HLG_A * np.log(np.maximum(12 * scene - HLG_B, 1e-9)) + HLG_C)


def display(code: np.ndarray, transfer: str) -> np.ndarray:
    """Code values (0-1) -> a BT.1886 gamma signal of display light over 0-PEAK: what the eye compares (SDR is
    already that signal)."""
    from vidup.video.hdr import hlg_to_nits, pq_to_nits

    if transfer == "sdr":
        return code
    nits = pq_to_nits(code) if transfer == "pq" else hlg_to_nits(code, PEAK)
    return np.power(np.clip(nits / PEAK, 0, 1), 1 / 2.4)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    from make_sample import hr_frames

    from vidup.config import load_config
    from vidup.engines.base import load_engine
    from vidup.video.hdr import DisplayReferredPQ, nits_to_pq

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    engine = load_engine(load_config(overrides={"temporal.enabled": False}))
    space = DisplayReferredPQ(PEAK)
    scores: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _, hr in list(hr_frames(args.frames * 6))[::6]:  # every 6th frame: varied content, bounded time
        nits = sdr_to_nits(hr)
        sdr = hr.astype(np.float32) / 255.0
        for transfer, code in (("sdr", sdr), ("pq", nits_to_pq(nits)), ("hlg", nits_to_hlg(nits))):
            truth = (np.clip(code, 0, 1) * 65535 + 0.5).astype(np.uint16)
            h, w = truth.shape[:2]
            low = cv2.resize(truth, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
            runs = {
                "lanczos": cv2.resize(low, (w, h), interpolation=cv2.INTER_LANCZOS4),
                "sr on code values": engine.upscale(low, (w, h)).image,
            }
            if transfer == "pq":
                runs["sr display-referred"] = space.inverse(engine.upscale(space.forward(low), (w, h)).image)
            reference = truth.astype(np.float32) / 65535
            for name, out in runs.items():
                got = out.astype(np.float32) / 65535
                scores.setdefault((transfer, name), []).append(
                    (psnr(got, reference), psnr(display(got, transfer), display(reference, transfer)))
                )
    rows = [
        {
            "transfer": t,
            "path": n,
            "psnr_code": float(np.mean([s[0] for s in v])),
            "psnr_display": float(np.mean([s[1] for s in v])),
        }
        for (t, n), v in scores.items()
    ]
    print(f"| transfer | path | PSNR code values (dB) | PSNR display light (dB) |  ({args.frames} frames, x4)")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['transfer'].upper()} | {r['path']} | {r['psnr_code']:.2f} | {r['psnr_display']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
