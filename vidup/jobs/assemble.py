"""Assembly: the segments' packets concatenated into the output in plan order, no re-encoding; the writer
copies every other stream of the source once, interleaved."""

from __future__ import annotations

from pathlib import Path

from vidup.errors import JobError
from vidup.jobs.plan import Plan
from vidup.jobs.segments import SegmentFile
from vidup.video.writer import VideoWriter


def join_dts(packet, last_dts: int | None) -> int | None:
    """Decode timestamps across a segment join. Each segment's encoder starts its dts before its first pts by its
    own reorder delay, which with variable frame rates differs between segments and can step back past the
    previous segment's last dts. Such packets move forward to stay strictly increasing (pts, what players show,
    never changes); a packet cannot then decode after it is shown (an IDR opens each segment)."""
    if packet.dts is None:
        return last_dts
    if last_dts is not None and packet.dts <= last_dts:
        packet.dts = last_dts + 1
        if packet.pts is not None and packet.dts > packet.pts:
            raise JobError("the segments' timestamps are too dense to join; rerun with a larger job.segment_frames")
    return packet.dts


def assemble(folder: Path, plan: Plan, writer: VideoWriter) -> None:
    """Every segment of `plan` from `folder` into `writer` (the caller closes it, which moves the file into place)."""
    last_dts = None
    for segment in plan.segments:
        file = SegmentFile.open(folder / segment.name)
        if file.extradata != writer.extradata:
            raise JobError(
                f"segment {segment.index} was encoded with other encoder settings than this output's; "
                "rerun with --fresh"
            )
        for packet in file.read():
            last_dts = join_dts(packet, last_dts)
            writer.write_encoded(packet.to_av(file.time_base))
