"""The local checkpoint cache ($TC_CACHE_DIR/checkpoints/<run id>/, default ~/.cache/tc): size and pruning.

`analyze` keeps every downloaded checkpoint there so that a second analysis of a run downloads nothing. It
never shrinks by itself; cap it with

    python -m tc.cache prune --max-gb 5        # or: mlflow run . --env-manager local -e cache -P max_gb=5

which deletes whole run directories, least recently used first, until the cache holds at most that much.
A pruned run is simply downloaded again (and re-verified against its sha256 index) the next time it is
analyzed. `python -m tc.cache size` prints the current size. With the environment variable TC_CACHE_MAX_GB
set, `analyze` applies that cap itself after each download (never deleting the runs it is analyzing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from tc.data import cache_dir


def checkpoint_root() -> Path:
    return cache_dir() / "checkpoints"


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def last_used(path: Path) -> float:
    """The latest access or modification time of anything in `path` (a run's dir as a whole)."""
    times = [path.stat().st_mtime] + [max(f.stat().st_mtime, f.stat().st_atime) for f in path.rglob("*")]
    return max(times)


def prune(root: Path, max_bytes: int, keep: tuple[str, ...] = ()) -> list[Path]:
    """Delete run directories under `root` (except those named in `keep`), least recently used first, until
    the rest totals <= max_bytes. Returns the deleted directories."""
    if not root.is_dir():
        return []
    runs = sorted((d for d in root.iterdir() if d.is_dir() and d.name not in keep), key=last_used)
    sizes = {d: dir_size(d) for d in runs}
    total = sum(sizes.values()) + sum(dir_size(root / k) for k in keep if (root / k).is_dir())
    deleted = []
    for d in runs:
        if total <= max_bytes:
            break
        shutil.rmtree(d, ignore_errors=True)
        total -= sizes[d]
        deleted.append(d)
    return deleted


def apply_env_cap(keep: tuple[str, ...]) -> list[Path]:
    """Prune to $TC_CACHE_MAX_GB if it is set (a number of GB); the runs in `keep` stay."""
    cap = os.environ.get("TC_CACHE_MAX_GB", "").strip()
    if not cap:
        return []
    try:
        max_gb = float(cap)
    except ValueError:
        raise ValueError(f"TC_CACHE_MAX_GB={cap!r} is not a number of GB") from None
    return prune(checkpoint_root(), int(max_gb * 1e9), keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tc.cache", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="delete least recently used runs until the cache is at most --max-gb")
    p.add_argument("--max-gb", "--max_gb", type=float, required=True, dest="max_gb")
    sub.add_parser("size", help="print the cache's size")
    args = parser.parse_args(argv)
    root = checkpoint_root()
    if args.command == "size":
        print(f"{root}: {dir_size(root) / 1e9 if root.is_dir() else 0:.3f} GB")
        return 0
    if not args.max_gb >= 0:
        print(f"tc cache: --max-gb={args.max_gb} must be >= 0", file=sys.stderr)
        return 2
    deleted = prune(root, int(args.max_gb * 1e9))
    left = dir_size(root) if root.is_dir() else 0
    print(f"tc cache: deleted {len(deleted)} run dir(s) from {root}; {left / 1e9:.3f} GB left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
