"""Progress lines for output that is not a terminal (logs, `mlflow run` piped to a file): where tqdm draws
nothing, `Periodic` prints one line every `interval` seconds with what is done, what is left and an ETA."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


class Periodic:
    """Call `update(n)` as work is done; prints `<label>: done/total unit (pct), left, elapsed, eta` at most
    every `interval` seconds, and only when `stream` is not a terminal (a terminal has tqdm's bar)."""

    def __init__(
        self, total: int, label: str, unit: str = "", interval: float = 5.0, stream: TextIO | None = None, done: int = 0
    ):
        self.total, self.label, self.unit, self.interval = total, label, unit, interval
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not (hasattr(self.stream, "isatty") and self.stream.isatty())
        self.done = self._start = done
        self._t0 = self._last = time.perf_counter()
        self.extra = ""

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self._t0
        rate = (self.done - self._start) / elapsed if elapsed > 0 else 0.0
        left = max(self.total - self.done, 0)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        pct = 100 * self.done / self.total if self.total else 100.0
        unit = f" {self.unit}" if self.unit else ""
        return (
            f"{self.label}: {self.done}/{self.total}{unit} ({pct:.0f}%), {left} left, "
            f"{elapsed:.0f}s elapsed, eta {eta}{self.extra}"
        )


@contextmanager
def progress_bar(total: int, label: str, unit: str = "sample") -> Iterator[Callable[[int], None]]:
    """`update(n)` for work of `total` units: a tqdm bar on a terminal, `Periodic` lines elsewhere."""
    from tqdm.auto import tqdm

    lines = Periodic(total, label, f"{unit}s")
    with tqdm(total=total, unit=unit, disable=None, leave=False) as bar:

        def update(n: int) -> None:
            bar.update(n)
            lines.update(n)

        yield update
