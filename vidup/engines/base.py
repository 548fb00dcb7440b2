"""The engine contract, the registry of engines (name -> descriptor with a factory), and `settle`, which resolves
every "auto" that depends on the machine once, at the edge."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from vidup.config import ENGINE_NAMES, SETTLED_SETTINGS, SR_AUTO_BATCH_GPU, VidupConfig
from vidup.device import choose_placement, device_kind
from vidup.engines.contract import Engine
from vidup.engines.sr import SREngine
from vidup.errors import ConfigError

PRECISION_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class EngineDescriptor:
    name: str
    summary: str
    devices: tuple[str, ...]
    factory: Callable[["VidupConfig"], Engine]
    cpu_bf16: bool  # whether "auto" precision may pick bf16 on a CPU with native bf16 instructions


def _make_sr(config: "VidupConfig") -> Engine:
    return SREngine.from_config(config)


def _make_flux(config: "VidupConfig") -> Engine:
    # Imported on use: the FLUX engine needs diffusers (an extra), and its import pulls in torch's compiler.
    try:
        import diffusers  # noqa: F401
    except ImportError:
        raise ConfigError("the flux engine needs diffusers, transformers and peft: pip install 'vidup[flux]'") from None
    from vidup.engines.flux.engine import FluxEngine

    return FluxEngine(config)


ENGINES: dict[str, EngineDescriptor] = {
    "sr": EngineDescriptor(
        name="sr",
        summary="feed-forward super-resolution (SPAN / RRDBNet) with bundled pretrained weights",
        devices=("cpu", "cuda", "mps"),
        factory=_make_sr,
        cpu_bf16=True,
    ),
    "flux": EngineDescriptor(
        name="flux",
        summary="two-stage FLUX.1-dev upscaler: img2img, then the ControlNet upscaler (+ LoRA); needs local weights",
        devices=("cuda", "mps", "cpu"),
        factory=_make_flux,
        cpu_bf16=False,  # bf16 diffusion on a CPU is slow and loses detail
    ),
}
assert tuple(ENGINES) == ENGINE_NAMES


def settle(config: VidupConfig) -> VidupConfig:
    """`config` with device, precision, sr.batch and temporal.backend resolved on this machine: what the engine
    will really run with, recorded by the job's manifest and the run's report (a job started on a GPU and resumed
    on a CPU would otherwise mix numerically different segments). Loads nothing."""
    placement = choose_placement(config.device, config.precision, cpu_bf16=ENGINES[config.engine].cpu_bf16)
    on_device = placement.device.type != "cpu"
    batch = config.sr.batch if config.sr.batch != "auto" else str(SR_AUTO_BATCH_GPU if on_device else 1)
    backend = config.temporal.backend if config.temporal.backend != "auto" else ("torch" if on_device else "cv2")
    return replace(
        config,
        device=str(placement.device),
        precision=PRECISION_NAMES[placement.dtype],
        sr=replace(config.sr, batch=batch),
        temporal=replace(config.temporal, backend=backend),
    )


def settled_values(config: VidupConfig) -> dict[str, str]:
    """The settled settings of a config, device by type (cuda:0 and cuda:1 compute alike)."""
    flat = config.settings()
    values = {name: str(flat[name]) for name in SETTLED_SETTINGS}
    values["device"] = device_kind(values["device"])
    return values


def load_engine(config: "VidupConfig") -> Engine:
    """Build the engine a validated config names (this is where model weights load)."""
    return ENGINES[config.engine].factory(config)
