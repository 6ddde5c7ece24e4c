"""Progress of every long loop (feature extraction, attribution, retraining), in one style.

On a terminal, a rich progress bar is drawn on stderr. When stderr is not a terminal (a log
file, ``nohup``, a pipe, a batch job), a bar cannot be redrawn, so plain lines are written
instead, one every :data:`PLAIN_INTERVAL_S` seconds (the environment variable
``SIMATTR_PROGRESS_INTERVAL`` sets another number of seconds) and a last one when the loop
ends::

    features: 12800/50000 (26%), 31 s elapsed, about 90 s left
    features: 50000/50000 (100%), done in 121 s

A loop that ends before the first interval writes nothing, so short commands keep quiet logs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Seconds between two plain progress lines when stderr is not a terminal.
PLAIN_INTERVAL_S = 10.0
#: Environment variable overriding :data:`PLAIN_INTERVAL_S` (a number of seconds, 0: every step).
INTERVAL_ENV = "SIMATTR_PROGRESS_INTERVAL"


def plain_interval() -> float:
    """Seconds between plain progress lines: ``$SIMATTR_PROGRESS_INTERVAL`` when it is a
    number >= 0, else :data:`PLAIN_INTERVAL_S`."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, ""))
    except ValueError:
        return PLAIN_INTERVAL_S
    return value if value >= 0 else PLAIN_INTERVAL_S


class PlainProgress:
    """Progress as plain lines on a stream that is not a terminal (see the module docstring)."""

    def __init__(
        self, description: str, total: int, interval: float, stream: TextIO | None = None
    ) -> None:
        self.description = description
        self.total = total
        self.interval = interval
        self.stream = stream
        self.done = 0
        self.started = self.last = time.monotonic()
        self.lines = 0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(now, final=False)

    def finish(self) -> None:
        """The last line, written only when the loop already wrote one (it took a while)."""
        if self.lines:
            self._write(time.monotonic(), final=True)

    def _write(self, now: float, *, final: bool) -> None:
        elapsed = now - self.started
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        line = f"{self.description}: {self.done}/{self.total}{share}, "
        if final:
            line += f"done in {elapsed:.0f} s"
        else:
            line += f"{elapsed:.0f} s elapsed"
            if 0 < self.done < self.total:
                line += f", about {elapsed * (self.total - self.done) / self.done:.0f} s left"
        stream = self.stream if self.stream is not None else sys.stderr
        print(line, file=stream, flush=True)
        self.lines += 1


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, enabled: bool = True
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; shows progress on stderr when ``enabled``: a rich bar on a
    terminal, plain periodic lines otherwise."""
    if not enabled:
        yield lambda n=1: None
        return
    if not _is_terminal(sys.stderr):
        plain = PlainProgress(description, total, plain_interval())
        yield plain.advance
        plain.finish()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def _is_terminal(stream: TextIO) -> bool:
    """Whether a live bar can be drawn on ``stream``: a terminal (as rich decides it, so
    ``FORCE_TERMINAL`` and the like are honoured) or a Jupyter notebook."""
    try:
        console = Console(file=stream)
        return bool(console.is_terminal or console.is_jupyter)
    except (AttributeError, ValueError, OSError):  # a closed or unusual stream
        return False
