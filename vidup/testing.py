"""Engines for tests and benchmarks: the real SR frame path around a network that only resizes (the null engine),
or the bundled model, with faults injected on cue (out of memory, a killed process, a dying Ray worker).
`EngineFactory` instances pickle, so Ray workers and subprocesses can build the same engine."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import torch

from vidup.device import choose_placement
from vidup.engines.sr import SREngine
from vidup.temporal.seeding import HistoryBlend


class Resize(torch.nn.Module):
    """A x4 'network' that only resizes (nearest): the engine's cost without the network's."""

    scale = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=4, mode="nearest")


class FaultySR(SREngine):
    """The SR engine with faults on cue. `oom_above`: network inputs (whole frames or tiles) with a side over
    this raise CUDA out of memory, from network call `oom_from` on. `kill_after`: after this many frames the
    process gets `kill_signal` (SIGKILL: a kill -9; SIGTERM: a scheduler stopping it), or, with `marker`, exits
    with os._exit the first time only (a Ray worker lost once)."""

    oom_above: int | None = None
    oom_from: int = 0
    kill_after: int | None = None
    kill_signal: int = signal.SIGKILL
    marker: str | None = None
    calls = 0
    frames = 0

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.oom_above is not None and self.calls > self.oom_from and max(x.shape[-2:]) > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return super()._forward(x)

    def upscale(self, frame, size, prior=None, network=None):
        if self.kill_after is not None and self.frames == self.kill_after:
            if self.marker is None:
                os.kill(os.getpid(), self.kill_signal)
            elif not Path(self.marker).exists():
                Path(self.marker).touch()
                os._exit(1)
        self.frames += 1
        return super().upscale(frame, size, prior, network)


@dataclass
class EngineFactory:
    network: str = "resize"  # resize (the null engine) | model (the configured SR model)
    oom_above: int | None = None
    oom_from: int = 0
    kill_after: int | None = None
    kill_signal: int = signal.SIGKILL
    marker: str | None = None

    def __call__(self, config) -> FaultySR:
        if self.network == "model":
            engine = SREngine.from_config(config)
            engine.__class__ = FaultySR
        else:
            engine = FaultySR(
                None,
                Resize(),
                "null (nearest x4)",
                choose_placement(config.device, "fp32"),
                tile=0,
                history=HistoryBlend.from_config(config.temporal),
                color_anchor=config.sr.color_anchor,
                color_anchor_sigma=config.sr.color_anchor_sigma,
                batch=config.sr.batch,
                backend=config.temporal.backend,
            )
            engine.name = "null"
        engine.oom_above, engine.oom_from = self.oom_above, self.oom_from
        engine.kill_after, engine.kill_signal, engine.marker = self.kill_after, self.kill_signal, self.marker
        return engine


def null_engine(config) -> SREngine:
    """The SR engine's frame path (resize, colour anchor, temporal blend) around a network that only resizes."""
    return EngineFactory()(config)
