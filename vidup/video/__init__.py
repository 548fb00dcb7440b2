"""Video I/O: streaming decode, encode with stream passthrough, and y4m/rawvideo pipes. Knows nothing of models."""

from vidup.video.reader import Frame, StreamInfo, VideoInfo, VideoReader, probe
from vidup.video.writer import VideoWriter

__all__ = ["Frame", "StreamInfo", "VideoInfo", "VideoReader", "VideoWriter", "probe"]
