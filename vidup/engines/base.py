"""The engine contract and the registry of engines (name -> descriptor with a factory)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

if TYPE_CHECKING:
    from vidup.config import VidupConfig


@dataclass
class StageOutput:
    """One named intermediate image of an engine, kept for QA previews."""

    name: str
    image: np.ndarray
    seconds: float


class Engine(Protocol):
    name: str

    def upscale(self, frame: np.ndarray, size: tuple[int, int], prior=None) -> np.ndarray:
        """RGB uint8 HxWx3 in, RGB uint8 at `size` (width, height) out. `prior` is a `TemporalPrior` from the
        previous frame of the same shot, or None (first frame, after a cut, or temporal coherence off)."""

    def stages(self) -> list[StageOutput]:
        """The intermediate images of the last `upscale` call, in order (the last one is the output)."""


@dataclass(frozen=True)
class EngineDescriptor:
    name: str
    summary: str
    devices: tuple[str, ...]
    factory: Callable[["VidupConfig"], Engine]


def _make_sr(config: "VidupConfig") -> Engine:
    from vidup.engines.sr import SREngine

    return SREngine.from_config(config)


def _make_flux(config: "VidupConfig") -> Engine:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        from vidup.errors import ConfigError

        raise ConfigError("the flux engine needs diffusers, transformers and peft: pip install 'vidup[flux]'") from None
    from vidup.engines.flux import FluxEngine

    return FluxEngine(config)


ENGINES: dict[str, EngineDescriptor] = {
    "sr": EngineDescriptor(
        name="sr",
        summary="feed-forward super-resolution (SPAN / RRDBNet) with bundled pretrained weights",
        devices=("cpu", "cuda", "mps"),
        factory=_make_sr,
    ),
    "flux": EngineDescriptor(
        name="flux",
        summary="two-stage FLUX.1-dev upscaler: img2img, then the ControlNet upscaler (+ LoRA); needs local weights",
        devices=("cuda", "mps", "cpu"),
        factory=_make_flux,
    ),
}


def load_engine(config: "VidupConfig") -> Engine:
    """Build the engine a validated config names (this is where model weights load)."""
    return ENGINES[config.engine].factory(config)
