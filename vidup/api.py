"""The library's entry points, one per job: upscale a file, filter a stream, preview a frame. The CLI is a thin
layer over these; each takes an `engine_factory` (the one seam through which tests and embedding programs give
their own engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vidup.config import VidupConfig
from vidup.engines.contract import Engine
from vidup.filter import run_filter  # noqa: F401  (an entry point)
from vidup.jobs.job import run_job
from vidup.preview import preview_frame  # noqa: F401  (an entry point)
from vidup.report import RunReport


def upscale_video(
    input_path: str | Path,
    output_path: str | Path,
    config: VidupConfig,
    engine: Engine | None = None,
    engine_factory: Callable[[VidupConfig], Engine] | None = None,
) -> RunReport:
    """Upscale a clip into a new file, as a resumable job (`vidup.jobs`): segments planned at the cuts, run in
    this process or on Ray (`job.workers`, `job.ray_address`; Ray workers build their engine with
    `engine_factory`), and concatenated without re-encoding. Everything that can be checked is checked before the
    model loads."""
    return run_job(input_path, output_path, config, engine, engine_factory)
