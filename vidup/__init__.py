"""vidup: a video upscaler for sports broadcast clips.

Library API (the CLI is a thin layer over it):
    upscale_video(input, output, config)  -> RunReport   upscale a file into a new file
    Upscaler(config).upscale(frames)      -> iterator    frame-level use, e.g. inside an editing pipeline
    load_config(path, overrides)          -> VidupConfig
    load_engine(config)                   -> Engine
"""

from vidup.api import upscale_video
from vidup.config import VidupConfig, load_config
from vidup.engines.base import load_engine
from vidup.errors import VidupError
from vidup.report import RunReport
from vidup.upscaler import Upscaler
from vidup.version import __version__

__all__ = [
    "RunReport",
    "Upscaler",
    "VidupConfig",
    "VidupError",
    "__version__",
    "load_config",
    "load_engine",
    "upscale_video",
]
