"""`CacheConfig`: the parameters of `python -m tc.tracking.cache prune` (docs/analyze.md). Not an MLproject entry
point: `mlflow run` would create an empty run at each use of a command that only touches local files."""

from __future__ import annotations

from dataclasses import dataclass

from tc.config.fields import check_range, opt


@dataclass(frozen=True)
class CacheConfig:
    """How far `prune` shrinks tc's local checkpoint cache."""

    max_gb: float = opt(
        5.0,
        "delete whole runs from the checkpoint cache, least recently used first, until it holds at most this many "
        "GB (10^9 bytes)",
    )

    def __post_init__(self) -> None:
        check_range("max_gb", self.max_gb, 0.0)
