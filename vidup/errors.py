"""Typed errors. Every failure a user can cause maps to one class; the CLI prints its message on one line."""

from __future__ import annotations


class VidupError(Exception):
    """Base class of every error vidup raises on purpose. Exit code 2 unless a subclass says otherwise."""

    exit_code = 2


class InputNotFoundError(VidupError):
    """The input path does not exist."""


class NotAVideoError(VidupError):
    """The input exists but FFmpeg cannot open it as a media file."""


class NoVideoStreamError(VidupError):
    """The input is a media file without a video stream (audio only, say)."""


class TruncatedInputError(VidupError):
    """The input is cut short: its index points past the end of the file."""


class CorruptInputError(VidupError):
    """Decoding failed part-way through the clip."""

    def __init__(self, message: str, frames_decoded: int):
        super().__init__(message)
        self.frames_decoded = frames_decoded


class OutputPathError(VidupError):
    """The output path is unusable: same as the input, already exists, or its folder is missing."""


class OutputWriteError(VidupError):
    """Writing the output failed: disk full, read-only or vanished folder, permission denied, an I/O error."""


class UnsupportedStreamError(VidupError):
    """A stream that must be copied cannot be stored in the chosen output container."""


class ConfigError(VidupError):
    """A setting is out of range, unknown, or inconsistent with another one."""


class ModelNotFoundError(VidupError):
    """Model weights are missing; the message says where vidup looked and how to get them."""


class ModelFormatError(VidupError):
    """A weights file does not match the architecture it is loaded into."""


class PipeFormatError(VidupError):
    """A y4m or rawvideo stream on stdin is malformed."""


class JobError(VidupError):
    """A job's folder or its plan cannot be used (a damaged segment file, a worker that keeps dying)."""


class JobLockedError(VidupError):
    """Another vidup process is working on the same output (its job folder is locked)."""


class EngineMemoryError(VidupError):
    """The engine ran out of memory and there was nothing left to shrink (tile, batch, VAE tiling, offload)."""


class TrainingDataError(VidupError):
    """The training data cannot be used: a missing or empty folder, unreadable images, orphan captions."""


class CheckpointError(VidupError):
    """A training checkpoint does not belong to this run (another base model or rank) or cannot be read."""
