"""The engine contract: what every engine takes and gives, and what some engines can also do, declared as
protocols (checked with isinstance, never probed by attribute name). A leaf: engines import it, the registry
(`vidup.engines.base`) imports the engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


@dataclass
class StageOutput:
    """One named intermediate image of an engine, kept for QA previews."""

    name: str
    image: np.ndarray
    seconds: float


@dataclass
class EngineOutput:
    """One upscaled frame. `carry` is the engine's own typed state for the next frame of the shot (handed back as
    `TemporalPrior.carry`); stages come to the host only when asked for (device images cost a copy)."""

    image: np.ndarray  # HxWx3 at the requested size, the frame's dtype
    carry: Any = None
    stage_images: Callable[[], list[StageOutput]] = field(default=list, repr=False)

    def stages(self) -> list[StageOutput]:
        """The intermediate images, in order (the last one is the output)."""
        return self.stage_images()


@runtime_checkable
class Engine(Protocol):
    name: str

    def upscale(self, frame: np.ndarray, size: tuple[int, int], prior=None) -> EngineOutput:
        """RGB HxWx3 (uint8 or uint16) in; the frame at `size` (width, height) out. `prior` is a `TemporalPrior`
        from the previous frame of the same shot, or None (first frame, after a cut, or temporal coherence off)."""


@runtime_checkable
class Batched(Protocol):
    """An engine whose network runs several frames per call: `network_batch` does that part for a run of frames,
    and `upscale(..., network=)` finishes each frame from its share."""

    batch: int

    def network_batch(self, frames: list[np.ndarray], size: tuple[int, int]) -> list: ...


@runtime_checkable
class Shrinkable(Protocol):
    """An engine that can run one step smaller after running out of memory (`vidup.backoff`), and be put back to
    its starting footprint at the start of each segment."""

    def footprint(self): ...

    def set_footprint(self, state) -> None: ...

    def shrink(self) -> str | None: ...
