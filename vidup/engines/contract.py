"""The engine contract: what every engine takes and gives. A leaf: engines import it, the registry
(`vidup.engines.base`) imports the engines."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


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
