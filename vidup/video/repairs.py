"""What a run skipped, dropped or repaired to get through a damaged or odd clip: counted by the reader and the
writer, reported by every run."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class Repairs:
    """What was skipped, dropped or repaired to get through a damaged or odd clip. Every run reports these."""

    damaged_packets: int = 0  # video packets flagged corrupt or undecodable, skipped (--on-decode-error skip)
    read_errors: int = 0  # demuxer errors read past (--on-decode-error skip)
    lost_frames: int = 0  # frames whose packets never decoded
    repaired_timestamps: int = 0  # out-of-order or duplicate video timestamps nudged forward
    resized_frames: int = 0  # frames of another size scaled to the first frame's
    dropped_packets: int = 0  # audio, subtitle or data packets dropped (damaged, or refused by the muxer)
    shifted_start: float = 0.0  # seconds added to every timestamp so no frame sits before zero
    incomplete: str | None = None  # a truncation accepted under --on-decode-error skip

    def any(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def summary(self) -> str:
        parts = []
        for name, text in (
            ("damaged_packets", "damaged video packets skipped"),
            ("read_errors", "read errors skipped"),
            ("lost_frames", "frames lost to damage"),
            ("repaired_timestamps", "out-of-order or duplicate timestamps repaired"),
            ("resized_frames", "frames of another size scaled to the first frame's"),
            ("dropped_packets", "damaged or unmuxable audio/subtitle/data packets dropped"),
        ):
            if getattr(self, name):
                parts.append(f"{getattr(self, name)} {text}")
        if self.shifted_start:
            parts.append(f"timestamps shifted by {self.shifted_start:+.3f} s so none is negative")
        if self.incomplete:
            parts.append(f"incomplete input: {self.incomplete}")
        return "; ".join(parts)
