"""The versioned, atomic write-back of an analysis into its training run, and reading the current one back.

Each analysis goes to a new `analysis/v<N>/`; the tag `tc.analysis_version` (the pointer) names the current
one only once all of its files and metrics are stored, so a reader sees one complete analysis at any moment
(`log_analysis` has the protocol, `current_analysis` the reader). Every tag and file read here is run data,
checked before it is used.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from tc.config import AnalyzeConfig
from tc.core.names import MAX_NUMBER, is_number
from tc.tracking.access import raise_if_refused
from tc.tracking.client import artifact_repo, client, get_run

if TYPE_CHECKING:  # tc.analysis pulls in scipy and matplotlib: the result is only passed through here
    from tc.analysis.result import AnalysisResult

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
        except (MlflowException, OSError) as e:
            raise_if_refused(e)  # a refusal is not an absent file (tc.tracking.access)
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
        repo = artifact_repo(run_id)
        for f in client().list_artifacts(run_id, ANALYSIS_DIR):
            version = _version_of(Path(f.path).name) if f.is_dir else None
            if version is None or version not in keep:
                repo.delete_artifacts(f.path)  # older versions, and files of a pre-version analysis
    except (NotImplementedError, MlflowException, OSError):
        pass  # a store that cannot delete keeps them; the pointer tag still names the current one


def log_analysis_result(cfg: AnalyzeConfig, result: AnalysisResult, last_step: int, analyze_run_id: str | None) -> int:
    """Write `result`'s tables and figures (with `cfg.outputs` = measures: summary.json alone, no tables or
    figures) and log them, with its metrics, into the training run `cfg.run_id` as a new analysis version (see
    `log_analysis`: a reader following the pointer sees this analysis whole or the previous one, at any number
    of metrics). `analyze_run_id`: the run that made the analysis (an analyze run, a sweep run), recorded in the
    tag `tc.analysis`.
    The tags record the run's status when analyzed, the last step seen and `allow_unfinished`; a window
    warning left by an earlier analysis that no longer holds is removed. Returns the version."""
    with tempfile.TemporaryDirectory() as tmp:
        from tc.analysis.files import write_files  # matplotlib only when an analysis is written

        write_files(result, Path(tmp), cfg)  # outputs=measures (a sweep trial): summary.json alone
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


def current_analysis_metrics(run_id: str) -> dict[str, float]:
    """The current analysis' values for the run's description: the pointed version's own summary.json
    (`current_analysis`), whole also while another write-back changes the run's latest metrics. {} when the
    run has no readable analysis: a description is cosmetic, and `check_previous_analysis` refuses such a run
    before it is analyzed again."""
    try:
        return current_analysis(run_id)[1]
    except ValueError:
        return {}
