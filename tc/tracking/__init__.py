"""The only module in `tc/` that talks to MLflow: configs, metrics, checkpoints and resume state.

Everything here takes an explicit `run_id`, so the same code logs into the run `mlflow run` created, into
a training run being resumed, or (for `analyze`) into a finished training run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tc.analysis.files import write_files
from tc.analysis.inputs import RunContext
from tc.analysis.splits import select_steps
from tc.config import AnalyzeConfig, TrainConfig, cast_field, from_strings
from tc.core import checkpoints as ck
from tc.core.data import DataBundle, DatasetNotFoundError, cache_dir, load_for, make_private_dir
from tc.core.names import MAX_NUMBER, is_number
from tc.tracking import cache

if TYPE_CHECKING:  # tc.analysis.run pulls in scipy and matplotlib: imported only where an analysis is loaded
    from tc.analysis.run import AnalysisResult

CONFIG_FILE = "config.json"
RESUME_FILE = "resume/state.pt"
RESUME_NOT_EXACT_TAG = "tc.resume_not_exact"  # why a resumed run may differ from an uninterrupted one


class RunNotFoundError(LookupError):
    """No MLflow run with that id on the current tracking server."""


def client() -> MlflowClient:
    return MlflowClient()


def get_run(run_id: str) -> mlflow.entities.Run:
    try:
        return client().get_run(run_id)
    except MlflowException as e:
        raise RunNotFoundError(
            f"no MLflow run {run_id!r} at tracking URI {mlflow.get_tracking_uri()} (set MLFLOW_TRACKING_URI?)"
        ) from e


def param_str(value: Any) -> str:
    """How a config value is written as an MLflow param (as MLproject defaults spell them)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@contextlib.contextmanager
def nested_run(tags: dict[str, str] | None = None, run_name: str | None = None) -> Iterator[str]:
    """A child run of the active run (the run id), ended FINISHED, or FAILED when the block raises, unless
    `end_active_run` ended it already (a failed or pruned sweep trial)."""
    with mlflow.start_run(nested=True, run_name=run_name, tags=tags) as run:
        yield run.info.run_id


def log_config(run_id: str, cfg: Any) -> None:
    """Log the config as params (one batch) and as `config.json`.

    `mlflow run` has already logged the parameters as given, and MLflow params are immutable, so a value
    that was given in another spelling ("1e-1" for 0.1) is kept, and one that the config resolved
    (depth=0 -> the model's default) is logged beside it as `<name>_resolved`."""
    values = asdict(cfg)
    given = get_run(run_id).data.params
    params = []
    for key, value in values.items():
        if key not in given:
            params.append(Param(key, param_str(value)))
        elif cast_field(type(cfg), key, given[key]) != value:
            params.append(Param(f"{key}_resolved", param_str(value)))
    client().log_batch(run_id, params=params)
    client().log_dict(run_id, values, CONFIG_FILE)


def load_train_config(run_id: str) -> TrainConfig:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client().download_artifacts(run_id, CONFIG_FILE, tmp)
        except (MlflowException, OSError) as e:
            raise RunNotFoundError(f"run {run_id} has no {CONFIG_FILE}: was it made by `tc` train?") from e
        return from_strings(TrainConfig, json.loads(Path(path).read_text()))


def log_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    client().log_batch(run_id, metrics=[Metric(k, float(v), int(time.time() * 1000), step) for k, v in metrics.items()])


def logged_steps(run_id: str, key: str) -> set[int]:
    return {m.step for m in client().get_metric_history(run_id, key)}


class CheckpointLogger:
    """Training callback: every checkpoint becomes an artifact under `checkpoints/`, `checkpoints/index.json`
    is re-logged after each one, and the resume state (which lists the index) is logged after it, so the
    resume state never names a checkpoint that is not yet stored."""

    def __init__(self, run_id: str, model_spec: dict, index: list[ck.IndexEntry] = ()):
        self.run_id = run_id
        self.model_spec = model_spec
        self.index = {e.step: e for e in index}
        # Files wait here until logged. Not a /tmp dir a kill -9 would leak: a dir per run under the cache,
        # which the next start of any train (and this one) removes when its writer is dead.
        clean_staging()
        self.dir = staging_dir(run_id)
        shutil.rmtree(self.dir, ignore_errors=True)
        make_private_dir(self.dir.parent)  # the cache analyze checks (cache.private_dir): never umask's mode
        self.dir.mkdir(mode=0o700)
        (self.dir / WRITER_FILE).write_text(json.dumps(writer_identity()))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def on_save(self, step: int, epoch: float, model: Any, state: dict, checkpoint: bool) -> None:
        if checkpoint:
            entry = ck.save_checkpoint(self.dir, step, epoch, self.model_spec, model.state_dict())
            client().log_artifact(self.run_id, str(self.dir / entry.file), ck.ARTIFACT_DIR)
            (self.dir / entry.file).unlink()
            self.index[step] = entry
            index_path = ck.write_index(self.dir, list(self.index.values()))
            client().log_artifact(self.run_id, str(index_path), ck.ARTIFACT_DIR)
        resume_path = self.dir / Path(RESUME_FILE).name
        ck.atomic_save({**state, "index": [asdict(e) for e in self.index.values()]}, resume_path)
        client().log_artifact(self.run_id, str(resume_path), str(Path(RESUME_FILE).parent))
        heartbeat(self.run_id)

    def on_epoch_end(self, step: int, epoch: int, metrics: dict[str, float]) -> None:
        log_metrics(self.run_id, metrics, step)

    def on_resume(self, step: int, reason: str | None) -> None:
        """A resume that cannot be exact says so on the run (tag `tc.resume_not_exact`), not only in its log."""
        if reason:
            client().set_tag(self.run_id, RESUME_NOT_EXACT_TAG, f"resumed at step {step}: {reason}"[:5000])


# ---- writers: who is training a run, and is that process alive ---------------------------------------

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


def load_resume_state(run_id: str) -> dict | None:
    """The last resume state of a run, or None if it was killed before its first checkpoint."""
    names = {f.path for f in client().list_artifacts(run_id, str(Path(RESUME_FILE).parent))}
    if RESUME_FILE not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return ck.safe_load(client().download_artifacts(run_id, RESUME_FILE, tmp))
        except ck.CheckpointError as e:  # name the artifact, not the temporary copy
            raise ck.CheckpointError(f"run {run_id}: {RESUME_FILE} {str(e).replace(tmp, '').split(': ', 1)[-1]}") from e


def delete_resume_state(run_id: str) -> bool:
    """Remove `resume/` from a run that finished: it only serves to continue a killed run, a finished run
    cannot be resumed, and it is about a quarter of a small run's artifacts. Best effort: artifact stores
    without deletion (some object stores behind a proxy) keep it; returns whether it was deleted."""
    try:
        _artifact_repo(run_id).delete_artifacts(str(Path(RESUME_FILE).parent))
        return True
    except (NotImplementedError, MlflowException, OSError):
        return False


def _artifact_repo(run_id: str):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(get_run(run_id).info.artifact_uri)


def checkpoint_index(run_id: str) -> list[ck.IndexEntry]:
    """A run's `checkpoints/index.json`, every entry checked by `ck.read_index`; no checkpoint is downloaded.
    A run without an index, or with one that fails the checks, gets one `ck.CheckpointError` naming it."""
    get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            index_path = client().download_artifacts(run_id, f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}", tmp)
        except (MlflowException, OSError) as e:
            raise ck.CheckpointError(
                f"run {run_id} has no {ck.ARTIFACT_DIR}/{ck.INDEX_FILE}: it logged no checkpoints to analyze"
            ) from e
        try:
            return ck.read_index(index_path)
        except ck.CheckpointError as e:
            raise ck.CheckpointError(
                f"run {run_id}: {ck.ARTIFACT_DIR}/{ck.INDEX_FILE} {str(e).split(': ', 1)[-1]}; the run is refused "
                "and nothing was downloaded"
            ) from None


def download_checkpoints(run_id: str, root: Path, last_only: bool = False) -> list[tuple[ck.IndexEntry, Path]]:
    """Fetch a run's checkpoints through MLflow (any tracking URI) into `root/<run_id>/`, verifying every
    file against the sha256 in `checkpoints/index.json`. Files already cached with the right hash are not
    downloaded again; a cached file with the wrong hash is replaced. `last_only`: only the entry of the
    largest step (the whole index is still checked first).

    The index is data from whoever logged the run: every entry is checked against the filename rule
    (`ck.read_index`) before anything is downloaded, a refused run gets one message naming the bad entry,
    and files are written only as `root/<run_id>/<ck.filename(step)>`, never through a symbolic link, in a
    cache that only this user can write (`cache.run_dir`)."""
    entries = checkpoint_index(run_id)
    if last_only and entries:
        entries = [max(entries, key=lambda e: e.step)]
    target = cache.run_dir(root, run_id)
    out = []
    # Staged inside the run's dir: the final rename stays on one file system (a /tmp on tmpfs would not). The
    # staging dir is made by path, which would follow a link swapped in after run_dir's check: run_dir refuses
    # a cache that anyone else can write (cache.private_dir), so no one else can swap one in.
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        for e in entries:
            name = ck.filename(e.step)  # == e.file, checked by read_index
            local = cache.cached_file(target, name)
            if local is None or ck.sha256(local) != e.sha256:
                try:
                    fetched = Path(client().download_artifacts(run_id, f"{ck.ARTIFACT_DIR}/{name}", tmp))
                except (MlflowException, OSError) as err:
                    raise ck.CheckpointError(
                        f"run {run_id}: {ck.ARTIFACT_DIR}/{name} is listed in {ck.INDEX_FILE} but missing from "
                        f"the artifact store ({type(err).__name__}), and not in the cache {target}"
                    ) from err
                if not fetched.is_file():  # a run can log a directory under a checkpoint's name
                    raise ck.CheckpointError(
                        f"run {run_id}: {ck.ARTIFACT_DIR}/{name} is a directory in the artifact store, not a "
                        "checkpoint file"
                    )
                if ck.sha256(fetched) != e.sha256:
                    raise ck.CheckpointError(
                        f"run {run_id}: {name} does not match its sha256 in the index (tampered or truncated)"
                    )
                local = cache.move_into(fetched, target, name)
            out.append((e, local))
    return out


ANALYSIS_DIR = "analysis"
ANALYSIS_TAG = "tc.analysis"  # the config of the current analysis (and the analyze run id)
ANALYSIS_VERSION_TAG = "tc.analysis_version"  # the pointer: the current analysis is analysis/v<N>/
ANALYSIS_STEP_TAG = "tc.analysis_step"  # the step its metrics were logged at
# {"version": N, "step": S} of a write-back in flight (or one that died midway), set before its first metric
ANALYSIS_WRITING_TAG = "tc.analysis_writing"
MAX_VERSION = MAX_NUMBER  # the largest N that `tc.core.names` reads back: log_analysis writes no larger one


def _number_tag(run_id: str, tags: dict[str, str], tag: str, what: str) -> int | None:
    """The whole number in tag `tag` of the run (None without the tag); anything else is refused, naming it."""
    raw = tags.get(tag)
    if raw is None:
        return None
    if not is_number(raw):
        raise ValueError(
            f"run {run_id}: its tag {tag}={raw[:300]!r} is not {what} (a whole number): refusing to read or write "
            "its analyses (delete the tag if no analysis of tc's made it)"
        )
    return int(raw)


def analysis_version(run_id: str, tags: dict[str, str]) -> int | None:
    """The run's current analysis version from its `tc.analysis_version` tag (None without the tag). The tag
    becomes an artifact path (`analysis/v<N>`), so anything but a plain number is refused, naming it."""
    return _number_tag(run_id, tags, ANALYSIS_VERSION_TAG, "an analysis version")


def analysis_step(run_id: str, tags: dict[str, str]) -> int:
    """The step the run's current analysis logged its metrics at (`tc.analysis_step`; 0 without the tag)."""
    return _number_tag(run_id, tags, ANALYSIS_STEP_TAG, "an analysis step") or 0


def _version_of(name: str) -> int | None:
    """N for a dir named `v<N>` under `analysis/`, else None (`tc.core.names.is_number`: `"²".isdigit()` is True)."""
    return int(name[1:]) if name.startswith("v") and is_number(name[1:]) else None


def analysis_dir(run_id: str) -> str | None:
    """The artifact dir of the run's current analysis (`analysis/v<N>`), `analysis` for one written before
    versions existed, or None if the run has not been analyzed."""
    tags = get_run(run_id).data.tags
    version = analysis_version(run_id, tags)
    if version is not None:
        return f"{ANALYSIS_DIR}/v{version}"
    return ANALYSIS_DIR if ANALYSIS_TAG in tags else None


def _versions(run_id: str) -> list[int]:
    names = (Path(f.path).name for f in client().list_artifacts(run_id, ANALYSIS_DIR) if f.is_dir)
    return [v for v in map(_version_of, names) if v is not None]


def _read_summary(run_id: str, where: str) -> dict[str, float] | None:
    """The metrics in `<where>/summary.json` (an analysis version's own record of its values); None if the
    file is absent. The file is run data: anything but a JSON object whose `metrics` is an object of string
    keys and numeric (not bool) values is refused, naming it."""
    name = f"{where}/summary.json"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client().download_artifacts(run_id, name, tmp)
        except (MlflowException, OSError):
            return None
        try:
            body = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:  # a directory, not UTF-8, not JSON
            body = e
    metrics = body.get("metrics") if isinstance(body, dict) else None
    if not (
        isinstance(metrics, dict)
        and all(
            isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) for k, v in metrics.items()
        )
    ):
        what = f"{type(body).__name__}: {body}" if isinstance(body, Exception) else json.dumps(body)
        raise ValueError(
            f"run {run_id}: {name} is not an analysis summary (a JSON object whose metrics map names to numbers; "
            f"it reads {what[:200]}): refusing to read or write analyses over it"
        )
    return {k: float(v) for k, v in metrics.items()}


def previous_analysis_metrics(run_id: str) -> set[str]:
    """Metric names the current analysis of `run_id` logged (from its summary.json), if any. The file is run
    data: anything but a JSON object whose `metrics` maps names to numbers is refused, naming it."""
    where = analysis_dir(run_id)
    return set() if where is None else set(_read_summary(run_id, where) or {})


def current_analysis(run_id: str) -> tuple[str | None, dict[str, float]]:
    """(artifact dir, metrics) of the run's current analysis, read by following the pointer to that version's
    own summary.json: the values of exactly the version the pointer names, at any moment, also while another
    analysis is being written back (a version's files are complete before the pointer names it, and the
    version before the current one is kept). A reader that looked up the pointer just before two later
    write-backs finds its version deleted: the pointer is then read again, once. (None, {}) if the run has
    not been analyzed."""
    where = analysis_dir(run_id)
    for _ in range(2):
        if where is None:
            return None, {}
        metrics = _read_summary(run_id, where)
        if metrics is not None:
            return where, metrics
        again = analysis_dir(run_id)
        if again == where:
            break
        where = again
    raise ValueError(
        f"run {run_id}: its current analysis {where} has no summary.json (deleted, or never written by tc): "
        "analyze the run again"
    )


def _writing_marker(run_id: str, tags: dict[str, str]) -> tuple[int, int] | None:
    """(version, step) of the run's `tc.analysis_writing` marker (None without it). The tag is run data: only
    a JSON object whose `version` and `step` are whole numbers within `tc.core.names`' rule is read; anything else
    is refused, naming it (a step past SQLite's integers would stop every later write-back)."""
    raw = tags.get(ANALYSIS_WRITING_TAG)
    if raw is None:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    numbers = [body.get(k) for k in ("version", "step")] if isinstance(body, dict) else [None]
    if not all(type(n) is int and 0 <= n <= MAX_NUMBER for n in numbers):
        raise ValueError(
            f"run {run_id}: its tag {ANALYSIS_WRITING_TAG}={raw[:300]!r} is not an analysis marker (a JSON object "
            "with whole-number version and step): refusing to read or write its analyses (delete the tag if no "
            "analysis of tc's made it)"
        )
    return numbers[0], numbers[1]


def analysis_metrics_settled(run_id: str) -> bool:
    """Whether the run's latest metrics are those of the analysis its pointer names: False while a write-back
    is in flight (its metrics go in before its pointer, in as many store calls as MLflow needs), or after one
    died midway, until the next analysis; also False for a marker that is not tc's. `current_analysis` reads
    the pointed version whole either way."""
    tags = get_run(run_id).data.tags
    try:
        marker = _writing_marker(run_id, tags)
        return marker is None or marker[0] == analysis_version(run_id, tags)  # numbers, not tag strings
    except ValueError:
        return False


def _orphan_metrics(run_id: str, versions: list[int], previous: int | None) -> set[str]:
    """Metric names of write-backs that died midway (versions above the pointer): some of their values may
    have reached the run's latest metrics, so the next analysis NaNs those it does not log itself. An orphan
    whose summary.json is missing or unreadable logged no metric: the marker, set before the first metric,
    comes only after every file of its version is stored, so it is skipped."""
    names: set[str] = set()
    for v in versions:
        if v > (previous or 0):
            with contextlib.suppress(ValueError):
                names |= set(_read_summary(run_id, f"{ANALYSIS_DIR}/v{v}") or {})
    return names


def _store_calls(metrics: list[Metric]) -> list[list[Metric]]:
    """`metrics` in chunks that MLflow's `log_batch` passes to its store whole, one store call each (it splits
    a batch above 1,000 entities, and a REST store refuses one)."""
    from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH

    size = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH)
    return [metrics[a : a + size] for a in range(0, len(metrics), size)]


def check_previous_analysis(run_id: str) -> None:
    """Refuse now, before an hour of analysis, a run whose analysis tags or summary `log_analysis` would refuse."""
    tags = get_run(run_id).data.tags
    analysis_step(run_id, tags)
    _writing_marker(run_id, tags)
    previous_analysis_metrics(run_id)  # reads the version tag too


def log_analysis(
    run_id: str, local_dir: Path, metrics: dict[str, float], step: int, config: dict, tags: dict | None = None
) -> int:
    """Log an analysis into `run_id` so that a reader following the pointer tag `tc.analysis_version` sees
    one complete analysis, at any number of metrics, and a write that dies midway leaves the previous one:

    1. the files go to a new, never used `analysis/v<N>/` (summary.json holds every value; a killed
       analysis leaves an orphan dir no pointer names);
    2. a tag `tc.analysis_writing` = {"version": N, "step": S} marks the run's latest metrics as in
       transition (`analysis_metrics_settled`) before any of them changes;
    3. the metrics: every new one, and NaN for every metric of the previous analysis (or of a write that
       died midway) that this one lacks, in store calls of at most 1,000 (MLflow splits larger batches, so
       no single transaction could hold them all);
    4. last, one call with the tags: the pointer `tc.analysis_version` = N, the config `tc.analysis`, the
       step and `tags`; the pointer thus names N only once every value of N is stored;
    5. then the marker is removed and dirs older than the previous version are deleted (best effort; the
       previous one is kept for a reader that looked up the pointer just before the switch).

    One writer per run: two analyses written back into one run at once can pick the same N, and their
    steps interleave; run them one after the other (a sweep's trials each write their own run).

    A reader that sees pointer N therefore finds all of N's values in the run's latest metrics and in
    `analysis/v<N>/`; while the marker names another version, the latest metrics are mixed and only
    `current_analysis` (the pointed version's summary.json) is whole. Metrics go at max(step, the step of the
    previous analysis and of any died write) so that they are the latest values even when this analysis
    ends at an earlier checkpoint. Returns N."""
    run = get_run(run_id)
    old_tags = run.data.tags
    previous = analysis_version(run_id, old_tags)
    marker = _writing_marker(run_id, old_tags)
    versions = _versions(run_id)
    version = max([*versions, previous or 0]) + 1
    if version > MAX_VERSION:
        raise ValueError(f"run {run_id}: its analyses reached version {version - 1}, the largest tc writes")
    step = max(int(step), analysis_step(run_id, old_tags), marker[1] if marker else 0)
    if step > MAX_NUMBER:
        raise ValueError(f"run {run_id}: step {step} is past {MAX_NUMBER}, the largest analysis step tc reads back")
    orphans = _orphan_metrics(run_id, versions, previous)
    # only keys the run holds: a name in a summary.json that is no metric of the run (none MLflow would take)
    # is never sent, so it cannot fail after the first chunk
    stale = ((previous_analysis_metrics(run_id) | orphans) & set(run.data.metrics)) - set(metrics)
    all_tags = {
        **(tags or {}),
        ANALYSIS_TAG: json.dumps(config)[:5000],
        ANALYSIS_STEP_TAG: str(step),
        ANALYSIS_VERSION_TAG: str(version),
    }
    pointer_call = [mlflow.entities.RunTag(k, str(v)) for k, v in all_tags.items()]
    from mlflow.utils.validation import MAX_PARAMS_TAGS_PER_BATCH

    if len(pointer_call) > MAX_PARAMS_TAGS_PER_BATCH:  # checked before anything is written: the pointer
        # and the tags it vouches for go in one store call (MLflow would split a larger batch)
        raise ValueError(
            f"run {run_id}: {len(pointer_call)} analysis tags do not fit one store call "
            f"({MAX_PARAMS_TAGS_PER_BATCH}); nothing was written"
        )
    client().log_artifacts(run_id, str(local_dir), f"{ANALYSIS_DIR}/v{version}")
    # synchronous: MLFLOW_ENABLE_ASYNC_LOGGING would otherwise queue the calls, and the order is the point
    marker = json.dumps({"version": version, "step": step})
    client().log_batch(run_id, tags=[mlflow.entities.RunTag(ANALYSIS_WRITING_TAG, marker)], synchronous=True)
    now = int(time.time() * 1000)
    values = {**metrics, **{k: float("nan") for k in sorted(stale)}}
    for chunk in _store_calls([Metric(k, float(v), now, step) for k, v in values.items()]):
        client().log_batch(run_id, metrics=chunk, synchronous=True)
    client().log_batch(run_id, tags=pointer_call, synchronous=True)
    with contextlib.suppress(MlflowException):  # cosmetic: a marker equal to the pointer means settled
        client().delete_tag(run_id, ANALYSIS_WRITING_TAG)
    _delete_old_analyses(run_id, keep={version, previous})
    return version


def _delete_old_analyses(run_id: str, keep: set) -> None:
    try:
        repo = _artifact_repo(run_id)
        for f in client().list_artifacts(run_id, ANALYSIS_DIR):
            version = _version_of(Path(f.path).name) if f.is_dir else None
            if version is None or version not in keep:
                repo.delete_artifacts(f.path)  # older versions, and files of a pre-version analysis
    except (NotImplementedError, MlflowException, OSError):
        pass  # a store that cannot delete keeps them; the pointer tag still names the current one


def seconds_per_epoch(run_id: str) -> float | None:
    """Active training time of one epoch: the last `train_seconds` (time spent training, summed over every
    resumed part; `tc.core.train`) over the epochs logged, when every epoch logged it. Runs that lack it for some
    epoch (trained by an older tc, or resumed by a newer one from an older tc's state, whose time is lost)
    fall back to the timestamps of the per-epoch metrics, the first epoch timed from the run's start, which
    also counts any downtime before a resume. None when the run logged no epoch."""
    history = sorted(client().get_metric_history(run_id, "epoch"), key=lambda m: m.step)
    if not history:
        return None
    seconds = sorted(client().get_metric_history(run_id, "train_seconds"), key=lambda m: m.step)
    if {m.step for m in seconds} == {m.step for m in history}:
        return seconds[-1].value / len(history)
    start = get_run(run_id).info.start_time
    return (history[-1].timestamp - start) / 1000 / len(history)


def load_run_checkpoints(
    run_id: str,
    model: Any,
    checkpoints: str = "all",
    keep: tuple[str, ...] = (),
    files: list[tuple[ck.IndexEntry, Path]] | None = None,
) -> ck.Checkpoints:
    """Download (cached), verify against the index's sha256 and load run `run_id`'s checkpoints selected by
    `checkpoints` (see `tc.analysis.splits.select_steps`); refuse any whose architecture is not `model`'s. With
    TC_CACHE_MAX_GB set, the cache is then pruned to that size (this run and `keep` stay). `files`: the run's
    `download_checkpoints` already done by the caller."""
    files = download_checkpoints(run_id, cache.checkpoint_root()) if files is None else files
    cache.apply_env_cap((run_id, *keep))
    chosen = set(select_steps(checkpoints, [e.step for e, _ in files]))
    steps, sds, spec = ck.load_series([(e, p) for e, p in files if e.step in chosen])
    loaded = ck.Checkpoints(steps, sds)
    ck.check_architecture(f"run {run_id}", loaded, spec, model)
    return loaded


def _load_one(run_id: str, model: Any, entry: ck.IndexEntry, path: Path) -> ck.StateDict:
    """The state dict of one downloaded checkpoint `path` of run `run_id`: its hash must match `entry`, the
    file must hold `entry.step` itself (an int, not a bool) and `model`'s architecture."""
    payload = ck.load_checkpoint(path, entry.sha256)
    step = ck.check_payload_step(f"run {run_id}", entry, payload)
    ck.check_architecture(
        f"run {run_id}", ck.Checkpoints([step], [payload["state_dict"]]), payload["model_spec"], model
    )
    return payload["state_dict"]


def load_final_checkpoint(run_id: str, model: Any, keep: tuple[str, ...] = ()) -> ck.Checkpoints:
    """Run `run_id`'s last checkpoint only (verified against the index's sha256, of `model`'s architecture),
    as one-entry `Checkpoints`: a reference run serves the cross-seed control and gm_disagreement, which use
    only its final network, so its other checkpoints are neither downloaded nor loaded."""
    files = download_checkpoints(run_id, cache.checkpoint_root(), last_only=True)
    if not files:
        raise ck.CheckpointError(f"run {run_id}: {ck.ARTIFACT_DIR}/{ck.INDEX_FILE} lists no checkpoint")
    ((entry, path),) = files
    cache.apply_env_cap((run_id, *keep))
    return ck.Checkpoints([entry.step], [_load_one(run_id, model, entry, path)])


def load_initial_state(run_id: str, model: Any, files: list[tuple[ck.IndexEntry, Path]]) -> ck.StateDict | None:
    """Run `run_id`'s initialisation (the step `ck.init_index` names) from its downloaded, verified checkpoint
    `files` (`download_checkpoints`), for an analysis whose `checkpoints` selection left it out; None when the
    run never logged step 0. The file must hold step 0 itself and `model`'s architecture."""
    i = ck.init_index([e.step for e, _ in files])
    if i is None:
        return None
    entry, path = files[i]
    return _load_one(run_id, model, entry, path)


def load_analysis_inputs(cfg: AnalyzeConfig) -> tuple[ck.Checkpoints, DataBundle, RunContext]:
    """Everything `tc.analysis.run.analyze_run` needs for `cfg.run_id`: its selected checkpoints (verified), its
    data set and its `RunContext` (architecture, minibatch size and seed, the reference run's last checkpoint,
    seconds per epoch, the step-0 checkpoint when the selection left it out). A user model's code comes only
    from `cfg.model`, the command line."""
    from tc.core.models import ModelSpec, build_model, factory_for

    train_cfg = load_train_config(cfg.run_id)
    check_previous_analysis(cfg.run_id)  # bad analysis tags or summary: refused now, not after the analysis
    # A run's data_dir and download name a directory on the trainer's machine: data is read only where the
    # analyzing user says (their own data_dir and download, $TC_DATA_DIR, tc's cache), never where a run says.
    try:
        data = load_for(replace(train_cfg, data_dir=cfg.data_dir, download=cfg.download))
    except DatasetNotFoundError as e:
        if not train_cfg.data_dir or cfg.data_dir:
            raise
        raise DatasetNotFoundError(
            f"{e}\nRun {cfg.run_id} was trained with data_dir={train_cfg.data_dir!r}, a directory on its trainer's "
            "machine that analyze never reads: say where the data is on this machine with -P data_dir=DIR (or "
            "set TC_DATA_DIR=DIR)"
        ) from None
    model = build_model(ModelSpec.of(train_cfg, data), factory_for(train_cfg.model, cfg.model))
    # one download (one index read, one hash check per file) for the selection and step 0: both see one index
    files = download_checkpoints(cfg.run_id, cache.checkpoint_root())
    # the cache cap spares the reference run, loaded next, as that load spares this one
    keep = (cfg.reference_run_id,) if cfg.reference_run_id else ()
    ckpts = load_run_checkpoints(cfg.run_id, model, cfg.checkpoints, keep=keep, files=files)
    reference = None
    if cfg.reference_run_id:
        reference = load_final_checkpoint(cfg.reference_run_id, model, keep=(cfg.run_id,))
    # gm_dist_init measures from step 0 whatever the selection (a list of steps may leave it out)
    i0 = ck.init_index(ckpts.steps)
    init = ckpts.state_dicts[i0] if i0 is not None else load_initial_state(cfg.run_id, model, files)
    run = RunContext(model, train_cfg.batch_size, train_cfg.seed, reference, seconds_per_epoch(cfg.run_id), init=init)
    return ckpts, data, run


def log_analysis_result(cfg: AnalyzeConfig, result: AnalysisResult, last_step: int, analyze_run_id: str) -> int:
    """Write `result`'s tables and figures and log them, with its metrics, into the training run `cfg.run_id`
    as a new analysis version (see `log_analysis`: a reader following the pointer sees this analysis whole or
    the previous one, at any number of metrics).
    The tags record the run's status when analyzed, the last step seen and `allow_unfinished`; a window
    warning left by an earlier analysis that no longer holds is removed. Returns the version."""
    with tempfile.TemporaryDirectory() as tmp:
        write_files(result, Path(tmp), cfg)
        config = {**asdict(cfg), "analyze_run_id": analyze_run_id}
        run = get_run(cfg.run_id)
        tags = {
            "tc.analysis_last_step": str(last_step),
            "tc.analysis_allow_unfinished": str(cfg.allow_unfinished).lower(),
            "tc.analysis_run_status": run.info.status,
            **result.summary.get("tags", {}),  # e.g. tc.window_warning: in the same batch as the metrics
        }
        version = log_analysis(cfg.run_id, Path(tmp), result.metrics, last_step, config, tags)
    if "tc.window_warning" in run.data.tags and "tc.window_warning" not in tags:
        client().delete_tag(cfg.run_id, "tc.window_warning")
    return version


def end_active_run(status: str, tags: dict[str, str]) -> None:
    """Tag the active run and end it with `status` (FAILED, KILLED). A sweep trial's runs end by id
    (`end_run`): this one ends whichever run is active."""
    mlflow.set_tags(tags)
    mlflow.end_run(status)


def end_run(run_id: str, status: str, tags: dict[str, str]) -> None:
    """Tag run `run_id` and end it with `status` (FAILED, KILLED), and never another run: through
    `mlflow.end_run` only while it is the active run (so it leaves the stack of active runs), else by id.
    `mlflow.end_run` pops the run before marking it, so after a failed attempt the active run is the parent,
    and a second `end_active_run` would end that."""
    client().log_batch(run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in tags.items()])
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        mlflow.end_run(status)
    else:
        client().set_terminated(run_id, status)


# ------------------------------------------------------------------ readable runs in the UI (issue 13)


def seed_runs(run_id: str) -> list[str]:
    """The runs of the same configuration at other seeds, tagged `tc.seed_of`: `run_id` (a sweep with
    seeds=2), in run `run_id`'s experiment."""
    experiment = get_run(run_id).info.experiment_id
    return [r.info.run_id for r in client().search_runs([experiment], f"tags.`tc.seed_of` = '{run_id}'")]


def use_default_experiment() -> None:
    """Put new runs into the `tc` experiment unless the user chose one (MLFLOW_EXPERIMENT_NAME or _ID), or
    `mlflow run` already created the run (MLFLOW_RUN_ID: it is in the experiment its --experiment-name chose)."""
    import os

    from tc.tracking import labels as runinfo

    if not any(os.environ.get(k) for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")):
        mlflow.set_experiment(runinfo.EXPERIMENT)


def name_run(run_id: str, name: str, *, force: bool = False) -> None:
    """Rename a run, but keep a name the user gave (`--run-name`): only MLflow's made-up names are replaced."""
    from tc.tracking import labels as runinfo

    if force or runinfo.is_generated_name(get_run(run_id).info.run_name):
        client().set_tag(run_id, "mlflow.runName", name)


def describe_run(run_id: str, markdown: str) -> None:
    """The run's description in the UI (Markdown)."""
    client().set_tag(run_id, "mlflow.note.content", markdown[:5000])


def label_train_run(run_id: str, cfg: TrainConfig) -> None:
    """Name (`resnet20-w16 fashion-mnist seed0`), tags (tc.dataset, tc.model, ...) and a first description."""
    from tc.tracking import labels as runinfo

    name_run(run_id, runinfo.run_name(cfg))
    client().log_batch(run_id, tags=[mlflow.entities.RunTag(k, v) for k, v in runinfo.train_tags(cfg).items()])
    describe_run(run_id, runinfo.describe_train(cfg, get_run(run_id).data.metrics))


def _analysis_metrics(run_id: str) -> dict[str, float]:
    """The current analysis' values for the run's description: the pointed version's own summary.json
    (`current_analysis`), whole also while another write-back changes the run's latest metrics. {} when the
    run has no readable analysis: a description is cosmetic, and `check_previous_analysis` refuses such a run
    before it is analyzed again."""
    try:
        return current_analysis(run_id)[1]
    except ValueError:
        return {}


def describe_train_run(run_id: str) -> None:
    """Refresh a training run's description from its logged metrics (after training, after each analysis)."""
    from tc.tracking import labels as runinfo

    cfg = load_train_config(run_id)
    describe_run(run_id, runinfo.describe_train(cfg, get_run(run_id).data.metrics, _analysis_metrics(run_id)))


def label_analysis(train_run_id: str, analyze_run_id: str | None, cfg: Any) -> None:
    """After an analysis: `tc.analysis.<setting>` tags on the training run (and the analyze run), the analyze
    run named `analyze <training run name>` with the headline numbers, the training run's description updated."""
    from tc.tracking import labels as runinfo

    tags = [mlflow.entities.RunTag(k, v[:5000]) for k, v in runinfo.analysis_tags(cfg).items()]
    client().log_batch(train_run_id, tags=tags)
    describe_train_run(train_run_id)
    if analyze_run_id and analyze_run_id != train_run_id:
        source = get_run(train_run_id)
        client().log_batch(analyze_run_id, tags=tags)
        name_run(analyze_run_id, runinfo.analyze_name(source.info.run_name))
        link = f"#/experiments/{source.info.experiment_id}/runs/{train_run_id}"
        describe_run(analyze_run_id, runinfo.describe_analysis(source.info.run_name, link, source.data.metrics))


# ------------------------------------------------------------------ logging from the user's own loop (issue 13)

# Per run, in this process: the config, the architecture, a staged model to map state dicts onto, and the
# run's checkpoint index (as logged so far, also by an earlier process of a resumed loop). A user model's
# factory is imported only from the name the user passed to `log_run_info` here, never from what a run's
# artifacts say.
_OWN_RUNS: dict[str, dict] = {}


def _active_run_id(run_id: str | None) -> str:
    if run_id:
        return run_id
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run: call this inside `with mlflow.start_run():` (or pass run_id=)")
    return run.info.run_id


def log_run_info(model: str, dataset: str, *, run_id: str | None = None, data: Any = None, **settings: Any):
    """Record in the active MLflow run what `analyze` needs to rebuild a run trained by your own loop.

    `model`: a tc zoo name (`resnet20`, `vgg`, `mlp`), `torchvision:<name>` or your `module:function` factory;
    `dataset`: a tc data set name (`digits`, `fashion-mnist`, ...); `settings`: any other `TrainConfig` field
    that describes your training (`epochs`, `batch_size`, `lr`, `seed`, `train_size`, `width`, `depth`, ...;
    analyze uses `train_size`, `seed` and `label_noise` to draw the same training subset, and `batch_size` for
    the gradient-noise minibatches). Logs the same params, `config.json`, name, tags and description as tc's
    own `train`. `data`: the `tc.core.data.DataBundle` if you loaded it already (saves loading it again).
    Returns the `TrainConfig`."""
    import torch

    from tc.config import from_strings
    from tc.core.data import load_for
    from tc.core.models import ModelSpec, build_model, factory_for
    from tc.tracking import labels as runinfo

    rid = _active_run_id(run_id)
    cfg = from_strings(TrainConfig, {"model": model, "dataset": dataset, **settings})
    # The staged copy's initial weights are drawn from a forked stream: the user's loop, seeded or restored
    # before this call, then draws exactly what it would without it (a restored loop stays exact). Only CUDA
    # devices already in use can hold a stream of the loop's, so an unused GPU is not initialised for this.
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        data = data if data is not None else load_for(cfg)
        spec = ModelSpec.of(cfg, data)
        staged = build_model(spec, factory_for(cfg.model, cfg.model))  # the name the user just passed us
    index = _logged_index(rid)  # a loop resumed in a new process continues the run's index, never restarts it
    log_config(rid, cfg)
    client().set_tag(rid, "tc.source", "own loop (tc.log_run_info)")
    label_train_run(rid, cfg)
    _OWN_RUNS[rid] = {"cfg": cfg, "spec": spec, "staged": staged, "index": index, "name": runinfo.run_name(cfg)}
    return cfg


def _logged_index(run_id: str) -> dict[int, ck.IndexEntry]:
    """Run `run_id`'s `checkpoints/index.json` by step, {} when it has none yet. Read as data: every entry
    must be an integer step under the name the filename rule gives it, or the run is refused."""
    where = f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}"
    if not any(f.path == where for f in client().list_artifacts(run_id, ck.ARTIFACT_DIR)):
        return {}
    return {e.step: e for e in checkpoint_index(run_id)}  # the one reader: every entry by the filename rule


def _own_run(run_id: str) -> dict:
    own = _OWN_RUNS.get(run_id)
    if own is None:
        raise RuntimeError(
            f"run {run_id}: call tc.log_run_info(model=..., dataset=...) in this process before logging checkpoints"
        )
    return own


def _staged_state_dict(staged: Any, state_dict: dict, name: str) -> dict:
    """Your model's state dict under the keys of tc's staged copy of it (the keys checkpoints hold), checked
    by loading it into that copy: a model that is not the named architecture fails here, at the first
    checkpoint, not at analysis time."""
    from tc.core.fx_stages import block_state_dict

    sd = state_dict
    if set(sd) != set(staged.state_dict()):
        try:
            sd = block_state_dict(staged.blocks, sd)
        except ValueError as e:
            raise ValueError(f"this model's state dict does not fit {name}: {e}") from e
    try:
        staged.load_state_dict(sd)
    except RuntimeError as e:
        raise ValueError(f"this model's state dict does not fit {name}: {str(e)[:500]}") from e
    return sd


def log_checkpoint(model: Any, step: int, epoch: float, *, run_id: str | None = None) -> ck.IndexEntry:
    """Log `model`'s weights at global optimizer step `step` (and `epoch`, fractional if mid-epoch) into the
    active run in tc's format: `checkpoints/step_XXXXXXXX.pt` (tensors only) and a re-logged
    `checkpoints/index.json` with every checkpoint's step, epoch, file and sha256. Call `log_run_info` first.
    Log step 0 (before training) too: analyze needs the initialisation and at least two checkpoints
    (`tc.CheckpointLogger`, i.e. `LoopCheckpointLogger`, logs step 0 itself when it is created). A step logged
    already is never overwritten: the same weights (and epoch) again return its entry; other ones raise
    `ValueError`."""
    rid = _active_run_id(run_id)
    own = _own_run(rid)
    sd = _staged_state_dict(own["staged"], model.state_dict(), own["cfg"].model)
    with tempfile.TemporaryDirectory(prefix="tc-ckpt-") as tmp:
        entry = ck.save_checkpoint(tmp, step, epoch, own["spec"].to_dict(), sd)
        logged = own["index"].get(entry.step)
        if logged is not None:
            if logged.sha256 != entry.sha256:  # e.g. trained weights logged as a resumed run's step 0
                raise ValueError(
                    f"run {rid}: step {entry.step} is logged already with other weights or epoch (sha256 "
                    f"{logged.sha256[:12]}..., these {entry.sha256[:12]}...); a logged checkpoint is never "
                    "overwritten: log the weights under a new step"
                )
            return logged
        client().log_artifact(rid, str(Path(tmp) / entry.file), ck.ARTIFACT_DIR)
        own["index"][entry.step] = entry
        client().log_artifact(rid, str(ck.write_index(tmp, list(own["index"].values()))), ck.ARTIFACT_DIR)
    return entry


class LoopCheckpointLogger:
    """`tc.CheckpointLogger(model, every=N)`: create it after `log_run_info` and before your first optimizer
    step. On a run with no checkpoint yet it logs the model's weights as they are then as step 0 (the
    initialisation: analyze needs it, e.g. for the early checkpoints and `gm_dist_init`), so a loop cannot
    forget it. On a run that has checkpoints (a loop resumed, in this process or a new one after
    `log_run_info`) it logs nothing: the weights are no longer the initialisation, and the run's step 0, if
    any, stays as it is. Call `.step(step, epoch)` after every optimizer step of your loop: every N-th step
    not in the run's index yet is logged with `log_checkpoint` (an explicit `.step(0, 0.0)` is not logged
    twice). Call `.close(step, epoch)` after the loop to log the final step too (if `every` did not land on
    it) and refresh the run's description. `.logged`: the steps in the run's index."""

    def __init__(self, model: Any, every: int = 1, *, run_id: str | None = None):
        if every < 1:
            raise ValueError(f"every={every}: log a checkpoint every >= 1 optimizer steps")
        self.model, self.every, self.run_id = model, int(every), _active_run_id(run_id)
        index = _own_run(self.run_id)["index"]
        if not index:
            log_checkpoint(self.model, 0, 0.0, run_id=self.run_id)
        elif 0 not in index:
            warnings.warn(
                f"run {self.run_id} has checkpoints but none at step 0 and the model is past its initialisation: "
                "no step 0 is logged, and analyze reports gm_dist_init as NaN",
                stacklevel=2,
            )

    @property
    def logged(self) -> list[int]:
        """The steps the run's checkpoint index holds, in order (those logged by earlier processes too)."""
        return sorted(_own_run(self.run_id)["index"])

    def step(self, step: int, epoch: float) -> ck.IndexEntry | None:
        """Log the weights after optimizer step `step` when it is a multiple of `every` not logged yet."""
        if step % self.every or step in _own_run(self.run_id)["index"]:
            return None
        return log_checkpoint(self.model, step, epoch, run_id=self.run_id)

    def close(self, step: int, epoch: float) -> None:
        """After the loop: log the final step `step` unless logged already, and refresh the description."""
        if step not in _own_run(self.run_id)["index"]:
            log_checkpoint(self.model, step, epoch, run_id=self.run_id)
        describe_train_run(self.run_id)
