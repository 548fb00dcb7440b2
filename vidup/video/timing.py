"""Time in a clip: positions given as frame indices or times, and the one nominal rate used where a stream states
none."""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from vidup.errors import ConfigError

NOMINAL_RATE = Fraction(25)  # frames per second assumed where a stream states no rate (PAL broadcast)


def nominal_rate(rate: Fraction | float | None) -> Fraction:
    """`rate`, or NOMINAL_RATE when the stream states none: one rule for converting times and frame indices."""
    return Fraction(rate) if rate else NOMINAL_RATE


_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)s?$")


@dataclass(frozen=True)
class Position:
    """A point in a clip, given as a frame index or a time in seconds."""

    frame: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, text: str | int | None) -> "Position | None":
        if text is None or text == "":
            return None
        value = str(text).strip()
        if value.isdigit():
            return cls(frame=int(value))
        match = _TIME.match(value)
        if not match or not (value.endswith("s") or ":" in value or "." in value):
            raise ConfigError(f"'{text}' is neither a frame index (120) nor a time (4.8s, 1:02.5, 00:01:02.5)")
        parts = [p for p in match.groups() if p is not None]
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + float(part)
        return cls(seconds=seconds)

    def seconds_at(self, rate: float) -> float:
        return self.seconds if self.seconds is not None else self.frame / rate

    def reached(self, index: int, seconds: float | None) -> bool:
        if self.frame is not None:
            return index >= self.frame
        return seconds is not None and seconds >= self.seconds - 1e-6
