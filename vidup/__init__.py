"""vidup: a video upscaler for sports broadcast clips.

Library API (the CLI is a thin layer over it):
    upscale_video(input, output, config)  -> RunReport   upscale a file into a new file
    Upscaler(config).upscale(frames)      -> iterator    frame-level use, e.g. inside an editing pipeline
    load_config(path, overrides)          -> VidupConfig
    load_engine(config)                   -> Engine
"""

__version__ = "0.1.0"

from vidup.config import VidupConfig, load_config  # noqa: E402
from vidup.engines.base import load_engine  # noqa: E402
from vidup.errors import VidupError  # noqa: E402
from vidup.runner import RunReport, Upscaler, upscale_video  # noqa: E402

__all__ = ["RunReport", "Upscaler", "VidupConfig", "VidupError", "load_config", "load_engine", "upscale_video"]
