"""Where tc keeps its files on this machine: the cache root ($TC_CACHE_DIR, default ~/.cache/tc) and private dirs.

Both the data sets (`tc.core.data`: `<cache>/data`) and the tracking layer (`tc.tracking.cache`: `<cache>/checkpoints`,
train's `<cache>/staging`) live under the one root, so the rule for creating it privately lives here, below both.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """tc's cache root: $TC_CACHE_DIR, default ~/.cache/tc (`~` expanded)."""
    return Path(os.environ.get("TC_CACHE_DIR", Path.home() / ".cache" / "tc")).expanduser()


def make_private_dir(path: Path) -> Path:
    """`path`, with every missing dir on the way created mode 0o700 (`mkdir(parents=True)` would create the
    parents with the umask's mode, e.g. 0o775 under Ubuntu's 002). Every command that creates tc's cache
    (train's staging, a data set, analyze's checkpoints) goes through here, so whichever runs first leaves a
    cache that `tc.tracking.cache.private_dir` accepts. Existing dirs are left as they are (and checked there)."""
    path = Path(path)
    if not path.is_dir():
        if path.parent != path:
            make_private_dir(path.parent)
        with contextlib.suppress(FileExistsError):  # another process made it first
            path.mkdir(mode=0o700)
    return path
