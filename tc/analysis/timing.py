"""Phase timers of an analysis: the wall seconds of each phase, logged as a `<phase>_seconds` metric, so that
the phase benchmark (benchmarks/analyze_phases.py) and the report's cost column read what each phase cost."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(metrics: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall seconds of the `with` body to `metrics[name]` (a sum when the phase runs more than once).
    A body that raises adds nothing: an analysis that fails logs no metric.

    >>> m = {}
    >>> with timed(m, "x_seconds"):
    ...     pass
    >>> m["x_seconds"] >= 0.0
    True
    """
    t0 = time.perf_counter()
    yield
    metrics[name] = metrics.get(name, 0.0) + time.perf_counter() - t0
