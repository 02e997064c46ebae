"""Progress bars: tqdm on a terminal; plain lines, a few a minute, when stderr is a log file or a pipe.

tqdm redraws its bar with carriage returns, which in a log file (nohup, CI, msrun's worker logs) becomes one
enormous line. Off a terminal the bar is printed as ordinary lines instead, at most one every
MFCORE_PROGRESS_INTERVAL seconds (default 30) plus the last one.
"""
from __future__ import annotations

import os
import sys


class _Lines:
    """A file for tqdm that turns each redraw ("\\r" + bar) into one line."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        for line in text.replace("\r", "\n").split("\n"):
            if line.strip():
                self.stream.write(line.rstrip() + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(**kwargs):
    """tqdm(**kwargs), line-based when stderr is not a terminal."""
    from tqdm import tqdm

    stream = sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(dynamic_ncols=True, **kwargs)
    interval = float(os.environ.get("MFCORE_PROGRESS_INTERVAL", "30"))
    return tqdm(file=_Lines(stream), mininterval=interval, maxinterval=max(interval, 10.0), ncols=100,
                ascii=True, **kwargs)
