"""`CacheConfig`: the `cache` entry point's parameters (`python -m tc.tracking.cache prune`; docs/analyze.md)."""

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
