"""The progress bar every long run shows on stderr (frames/s and ETA); `quiet` silences it."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, quiet: bool, description: str):
    # On a terminal the bar redraws in place; into a log file every redraw is a new line, so redraw rarely.
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        disable=quiet,
        unit="frame",
        desc=description,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
        mininterval=0.1 if interactive else 10.0,
    )
