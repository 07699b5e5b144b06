"""The local checkpoint cache ($TC_CACHE_DIR/checkpoints/<run id>/, default ~/.cache/tc): size and pruning.

`analyze` keeps every downloaded checkpoint there so that a second analysis of a run downloads nothing. It
never shrinks by itself; cap it with

    python -m tc.tracking.cache prune --max-gb 5

which deletes whole run directories, least recently used first, until the cache holds at most that much. It is
no MLproject entry point: `mlflow run` would create an empty MLflow run at each use of a command that touches
only local files; this one creates none.
A pruned run is simply downloaded again (and re-verified against its sha256 index) the next time it is
analyzed. `python -m tc.tracking.cache size` prints the current size. With the environment variable TC_CACHE_MAX_GB
set, `analyze` applies that cap itself after each download (never deleting the runs it is analyzing).

The cache holds only what tc put there: it is private (tc creates its dirs 0o700 and refuses a cache dir or
`checkpoints/` dir that another user owns or that group or others can write: whoever can write there can swap
in a link after any check), a run's dir is named by a plain run id (`run_dir`), files in it only by the
checkpoint filename rule, and tc neither writes, reads, sizes nor deletes through a symbolic link below the
cache's `checkpoints/` dir (that dir itself may be a link, e.g. to a bigger disk).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import stat
import sys
from pathlib import Path

from tc.config import CacheConfig, from_strings
from tc.core import names
from tc.core.paths import cache_dir, make_private_dir


def checkpoint_root() -> Path:
    return cache_dir() / "checkpoints"


class CacheError(ValueError):
    """A cache path that tc will not use: a run id that is not a plain name, a symbolic link, or a cache dir
    that someone else can write."""


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a plain name that can be a cache dir, else CacheError naming it."""
    if not names.is_run_id(run_id):
        raise CacheError(f"run id {str(run_id)[:300]!r} is not a plain name (letters, digits, _, -): not a cache path")
    return run_id


def private_dir(path: Path) -> Path:
    """`path`, created with mode 0o700 if missing, once checked to be a directory that only this user can
    write: owned by them, not writable by group or others. Anyone else who can write in the cache can swap a
    link in after any check tc makes (between `run_dir` and a download into it, say), so such a cache is
    refused as a whole, with one message; the per-path checks (`run_dir`, `move_into`) are a second line.
    A link AT `path` is followed (a cache moved to a bigger disk): what it points to is what is checked."""
    path = make_private_dir(path)
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"{path}: tc's cache needs a directory here, not a file")
    if os.name != "posix":  # no uids or mode bits to check (Windows: ACLs, a user's profile dir by default)
        return path
    if st.st_uid != os.getuid():
        why, fix = f"owned by uid {st.st_uid}, not you (uid {os.getuid()})", "Set"
    elif st.st_mode & 0o022:
        why = f"writable by group or others (mode {stat.S_IMODE(st.st_mode):#o})"
        fix = f"Run `chmod go-w {path}` or set"
    else:
        return path
    raise CacheError(
        f"{path}: tc's cache must be a directory only you can write, but it is {why}; another user could plant "
        f"links there that send tc's downloads anywhere. {fix} TC_CACHE_DIR to a directory of your own"
    )


def run_dir(root: Path, run_id: str) -> Path:
    """`root/<run_id>`, created if missing: where a run's checkpoints are cached. `root` (a cache's
    `checkpoints` dir) and the cache dir above it must be private (`private_dir`). A symbolic link at
    `root/<run_id>` is refused, never followed (planted, it would send tc's writes outside the cache)."""
    root = Path(root)
    private_dir(root.parent)
    private_dir(root)
    d = root / check_run_id(run_id)
    if d.is_symlink():
        raise CacheError(
            f"{d} is a symbolic link (to {os.readlink(d)!r}): tc writes only into real directories of its cache; "
            "remove the link"
        )
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def cached_file(directory: Path, name: str) -> Path | None:
    """`directory/name` if it is a regular file there, not a symbolic link (a link is never read through: the
    caller downloads the file again, and `move_into` replaces the link itself, not what it points to)."""
    path = directory / name
    return path if path.is_file() and not path.is_symlink() else None


def move_into(src: Path, directory: Path, name: str) -> Path:
    """Rename `src` to `directory/name` atomically (same file system: `src` is staged inside `directory`). The
    directory is opened without following a link, so a link swapped in after `run_dir` checked it fails here
    instead of redirecting the write; `name` must be a checkpoint file name (`tc.core.names`), the only files tc
    caches."""
    if not names.is_checkpoint_file(name):
        raise CacheError(f"{str(name)[:300]!r} is not a checkpoint file name (step_<step>.pt): not a cache path")
    # os.supports_dir_fd lists os.rename but not os.replace, though both are renameat() and take dir fds.
    if os.rename in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW"):
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as e:
            raise CacheError(f"{directory}: not a real directory of the cache ({e.strerror}); nothing written") from e
        try:
            os.replace(src, name, dst_dir_fd=fd)
        finally:
            os.close(fd)
    else:  # no dir fds (Windows): check, then rename
        if directory.is_symlink():
            raise CacheError(f"{directory} is a symbolic link: nothing written")
        os.replace(src, directory / name)
    return directory / name


def _files(path: Path) -> list[Path]:
    """Regular files under `path`, not through or including symbolic links below it. `path` itself is
    resolved once: a user may link the cache's checkpoints dir to a bigger disk (a planted link to a run dir
    is never passed here: `prune` and `run_dir` skip or refuse it)."""
    path = Path(path).resolve()
    if not path.is_dir():
        return []
    return [f for f in path.rglob("*") if not f.is_symlink() and f.is_file()]  # rglob does not enter links


def dir_size(path: Path) -> int:
    return sum(f.lstat().st_size for f in _files(path))


def last_used(path: Path) -> float:
    """The latest access or modification time of anything in `path` (a run's dir as a whole)."""
    times = [path.lstat().st_mtime] + [max(s.st_mtime, s.st_atime) for s in (f.lstat() for f in _files(path))]
    return max(times)


def prune(root: Path, max_bytes: int, keep: tuple[str, ...] = ()) -> list[Path]:
    """Delete run directories under `root` (except those named in `keep`), least recently used first, until
    the rest totals <= max_bytes. Returns the deleted directories."""
    if not root.is_dir():
        return []
    # A symbolic link is not a run dir: neither counted nor deleted (rmtree would refuse it anyway).
    runs = sorted((d for d in root.iterdir() if _is_real_dir(d) and d.name not in keep), key=last_used)
    sizes = {d: dir_size(d) for d in runs}
    total = sum(sizes.values()) + sum(dir_size(root / k) for k in keep if _is_real_dir(root / k))
    deleted = []
    for d in runs:
        if total <= max_bytes:
            break
        shutil.rmtree(d, ignore_errors=True)
        total -= sizes[d]
        deleted.append(d)
    return deleted


def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


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
    parser = argparse.ArgumentParser(prog="python -m tc.tracking.cache", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="delete least recently used runs until the cache is at most --max-gb")
    p.add_argument("--max-gb", "--max_gb", required=True, dest="max_gb", help=_help("max_gb"))
    sub.add_parser("size", help="print the cache's size")
    args = parser.parse_args(argv)
    root = checkpoint_root()
    if args.command == "size":
        print(f"{root}: {dir_size(root) / 1e9 if root.is_dir() else 0:.3f} GB")
        return 0
    try:  # cast and checked by its config, as every tc command's parameters
        cfg = from_strings(CacheConfig, {"max_gb": args.max_gb})
    except ValueError as e:
        print(f"tc cache: {e}", file=sys.stderr)
        return 2
    deleted = prune(root, int(cfg.max_gb * 1e9))
    left = dir_size(root) if root.is_dir() else 0
    print(f"tc cache: deleted {len(deleted)} run dir(s) from {root}; {left / 1e9:.3f} GB left")
    return 0


def _help(name: str) -> str:
    (field,) = [f for f in dataclasses.fields(CacheConfig) if f.name == name]
    return field.metadata["help"]


if __name__ == "__main__":
    sys.exit(main())
