"""Who is training a run, and is that process alive; the staging dir where a training run's files wait.

A training process claims its run (tags `tc.writer`: host, pid and process start time, and
`tc.writer_heartbeat`, renewed at every checkpoint), so a second `train -P resume_run_id=...` can refuse a
run that is still being trained. Its files wait in `<cache>/staging/<run id>/` (with its `writer.json`) until
logged; a staging dir whose writer died on this host is removed by the next start of any train.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import mlflow

from tc.core.paths import cache_dir
from tc.tracking import cache
from tc.tracking.client import client

WRITER_TAG = "tc.writer"
HEARTBEAT_TAG = "tc.writer_heartbeat"
WRITER_FILE = "writer.json"
#: a writer on another host counts as alive while its last heartbeat (one per checkpoint) is this recent
WRITER_LEASE_S = float(os.environ.get("TC_WRITER_LEASE_S", 1800))


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), or None if there is no such process. With
    the pid it identifies a process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return ""
        return ""  # alive, start time unknown (no /proc)


def writer_identity(pid: int | None = None) -> dict:
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def writer_alive(writer: dict) -> bool | None:
    """True/False for a writer on this host; None when it ran on another host (cannot be checked here)."""
    if writer.get("host") != socket.gethostname():
        return None
    start = _process_start(int(writer["pid"]))
    return start is not None and (not start or not writer.get("start") or start == writer["start"])


def claim_run(run_id: str) -> None:
    """Record this process as the run's writer (host, pid, process start time)."""
    client().log_batch(
        run_id,
        tags=[
            mlflow.entities.RunTag(WRITER_TAG, json.dumps(writer_identity())),
            mlflow.entities.RunTag(HEARTBEAT_TAG, str(int(time.time()))),
        ],
    )


def heartbeat(run_id: str) -> None:
    client().set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))


def live_writer(run: mlflow.entities.Run) -> str | None:
    """Why `run` (RUNNING) still has a live writer, or None when its writer is dead or unknown."""
    raw = run.data.tags.get(WRITER_TAG)
    if run.info.status != "RUNNING" or not raw:
        return None
    writer = json.loads(raw)
    alive = writer_alive(writer)
    if alive:
        return f"process {writer['pid']} on {writer['host']} is still training it"
    if alive is None:
        age = time.time() - float(run.data.tags.get(HEARTBEAT_TAG, 0))
        if age < WRITER_LEASE_S:
            return (
                f"process {writer['pid']} on host {writer['host']} logged to it {age:.0f} s ago (a writer on "
                f"another host counts as alive for TC_WRITER_LEASE_S={WRITER_LEASE_S:.0f} s after its last checkpoint)"
            )
    return None


def staging_dir(run_id: str) -> Path:
    return cache_dir() / "staging" / cache.check_run_id(run_id)


def clean_staging() -> None:
    """Remove staging dirs of writers that died on this host (kill -9 leaves them)."""
    root = cache_dir() / "staging"
    for d in root.glob("*") if root.is_dir() else ():
        try:
            writer = json.loads((d / WRITER_FILE).read_text())
        except (OSError, ValueError):
            writer = None
        try:  # a dir without its writer.json may be one another process is just creating
            fresh = time.time() - d.stat().st_mtime < 60
        except OSError:
            continue
        if (writer is None and not fresh) or (writer is not None and writer_alive(writer) is False):
            shutil.rmtree(d, ignore_errors=True)
