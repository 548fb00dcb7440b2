"""Out-of-memory backoff: a frame that does not fit is run again with a smaller footprint, never dropped.

Engines that can shrink are `Shrinkable` (vidup.engines.contract): `shrink() -> str | None` (one step smaller; what
changed, or None when nothing is left) and `footprint()` / `set_footprint(state)` so a job can start each segment
from the configured setting.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from vidup.engines.contract import Shrinkable
from vidup.errors import EngineMemoryError

log = logging.getLogger("vidup")
T = TypeVar("T")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS out of memory (torch.OutOfMemoryError, or a RuntimeError saying so) or a host MemoryError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def with_backoff(call: Callable[[], T], engine, where: str, warn: Callable[[str], None]) -> T:
    """`call()`, retried after each `engine.shrink()` while it runs out of memory."""
    while True:
        try:
            return call()
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            change = engine.shrink() if isinstance(engine, Shrinkable) else None
            if change is None:
                raise EngineMemoryError(
                    f"out of memory at {where}, with nothing left to shrink "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                    "try a smaller --size or a GPU with more memory"
                ) from None
            message = f"out of memory at {where}: {change}, for the rest of the segment"
            log.warning(message)
            warn(message)
