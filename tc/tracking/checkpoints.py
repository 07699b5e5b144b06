"""A run's checkpoints in MLflow: logged during training (`CheckpointCallback`), listed (`checkpoint_index`),
downloaded into the cache and verified, and loaded with the rest of what an analysis of the run needs.

Checkpoints live under the run's `checkpoints/` as `step_XXXXXXXX.pt` (tensors only) with `checkpoints/index.json`
(step, epoch, file, sha256). The index is data from whoever logged the run: every entry is checked against the
filename rule before anything is downloaded, and every file against its sha256.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, NamedTuple

from mlflow.exceptions import MlflowException

from tc.analysis.inputs import RunContext, TrainingHistory
from tc.analysis.splits import select_steps
from tc.config import AnalyzeConfig, CheckpointSpec
from tc.core import checkpoints as ck
from tc.core.data import DataBundle, DatasetNotFoundError, load_for
from tc.core.models import ModelSpec, build_model, factory_for
from tc.core.paths import make_private_dir
from tc.tracking import cache
from tc.tracking.access import raise_if_refused
from tc.tracking.analyses import check_previous_analysis
from tc.tracking.client import client, get_run, load_train_config, log_metrics, metric_curve, seconds_per_epoch
from tc.tracking.resume import RESUME_FILE, RESUME_NOT_EXACT_TAG
from tc.tracking.writers import WRITER_FILE, clean_staging, heartbeat, staging_dir, writer_identity


class AnalysisInputs(NamedTuple):
    """Everything `tc.analysis.run.analyze_run` needs for a run, besides its config (`load_analysis_inputs`)."""

    checkpoints: ck.Checkpoints  # the selected checkpoints, verified
    data: DataBundle
    run: RunContext


class CheckpointCallback:
    """Training callback (`tc.core.train.train`): every checkpoint becomes an artifact under `checkpoints/`,
    `checkpoints/index.json` is re-logged after each one, and the resume state (which lists the index) is
    logged after it, so the resume state never names a checkpoint that is not yet stored. Per-epoch metrics
    go to the run too. (Your own loop logs with `tc.CheckpointLogger`, `tc.tracking.own_loop`.)"""

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


def checkpoint_index(run_id: str) -> list[ck.IndexEntry]:
    """A run's `checkpoints/index.json`, every entry checked by `ck.read_index`; no checkpoint is downloaded.
    A run without an index, or with one that fails the checks, gets one `ck.CheckpointError` naming it."""
    get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            index_path = client().download_artifacts(run_id, f"{ck.ARTIFACT_DIR}/{ck.INDEX_FILE}", tmp)
        except (MlflowException, OSError) as e:
            raise_if_refused(e)  # a refusal is not a missing file (tc.tracking.access)
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


BULK_MIN = 8  # missing files above which the checkpoint folder is fetched in one store call


def _folder_fetch_ok(run_id: str, missing: list[ck.IndexEntry], index_names: set[str]) -> bool:
    """Whether run `run_id`'s checkpoint folder may come in one call: its listing holds only files the index
    names (no directory, which could hold anything, nor a link to one, which a file store follows), and the
    files weigh at most twice the `missing` ones (the run's logger chose every size). The index itself is
    left out of the sums: it is already read. A listing that fails or gives no sizes says no."""
    try:
        listing = client().list_artifacts(run_id, ck.ARTIFACT_DIR)
    except (MlflowException, OSError) as refused:
        raise_if_refused(refused)  # a refusal is not a missing file (tc.tracking.access)
        return False
    sizes: dict[str, int] = {}
    for info in listing:
        name = Path(info.path).name
        if info.is_dir or f"{ck.ARTIFACT_DIR}/{name}" != info.path or info.file_size is None:
            return False
        if name == ck.INDEX_FILE:
            continue
        if name not in index_names:
            return False
        sizes[name] = info.file_size
    wanted = sum(sizes.get(ck.filename(e.step), 0) for e in missing)
    return sum(sizes.values()) <= 2 * wanted


def download_checkpoints(
    run_id: str, root: Path, last_only: bool = False, steps: Callable[[list[int]], Iterable[int]] | None = None
) -> list[tuple[ck.IndexEntry, Path]]:
    """Fetch a run's checkpoints through MLflow (any tracking URI) into `root/<run_id>/`, verifying every
    file against the sha256 in `checkpoints/index.json`. Files already cached with the right hash are not
    downloaded again; a cached file with the wrong hash is replaced. `last_only`: only the entry of the
    largest step (the whole index is still checked first). `steps`: given the index's steps, the ones to fetch
    (an analysis's selection): the others are neither downloaded nor returned.

    When more than `BULK_MIN` files are missing from the cache and they are most of the index, the run's
    checkpoint folder comes in one store call (after one listing) instead of one per file: a sweep trial's run
    holds hundreds of small checkpoints, and a call per file (0.05-0.2 s each, mostly MLflow's own overhead) cost
    more than the trial's whole analysis (issue 21). Only a folder that holds nothing but the index's files, and
    whose files weigh at most twice the missing ones, comes in one call (`_folder_fetch_ok`); every file is then
    checked against the index as before.

    The index is data from whoever logged the run: every entry is checked against the filename rule
    (`ck.read_index`) before anything is downloaded, a refused run gets one message naming the bad entry,
    and files are written only as `root/<run_id>/<ck.filename(step)>`, never through a symbolic link, in a
    cache that only this user can write (`cache.run_dir`)."""
    entries = checkpoint_index(run_id)
    n_index = len(entries)
    index_names = {ck.filename(e.step) for e in entries}
    if last_only and entries:
        entries = [max(entries, key=lambda e: e.step)]
    if steps is not None:
        wanted = set(steps([e.step for e in entries]))
        entries = [e for e in entries if e.step in wanted]
    target = cache.run_dir(root, run_id)
    cached = {e.step: cache.cached_file(target, ck.filename(e.step)) for e in entries}
    cached = {k: v for k, v in cached.items() if v is not None}
    missing = [e for e in entries if e.step not in cached]
    out = []
    # Staged inside the run's dir: the final rename stays on one file system (a /tmp on tmpfs would not). The
    # staging dir is made by path, which would follow a link swapped in after run_dir's check: run_dir refuses
    # a cache that anyone else can write (cache.private_dir), so no one else can swap one in.
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        bulk = None
        # the folder and single files land in separate dirs: a single fetch never writes into the folder's tree
        (one := Path(tmp) / "one").mkdir()
        if len(missing) > BULK_MIN and 2 * len(missing) >= n_index and _folder_fetch_ok(run_id, missing, index_names):
            try:  # one call for the folder; a file it lacks is reported below, by name, as when fetched alone
                (Path(tmp) / "bulk").mkdir()
                bulk = Path(client().download_artifacts(run_id, ck.ARTIFACT_DIR, str(Path(tmp) / "bulk")))
            except (MlflowException, OSError) as refused:
                raise_if_refused(refused)  # a refusal is not a missing file (tc.tracking.access)
                bulk = None  # fall back to one call per file, whose error names the file
        for e in entries:
            name = ck.filename(e.step)  # == e.file, checked by read_index
            local = cached.get(e.step)
            if local is None or ck.sha256(local) != e.sha256:
                try:
                    if bulk is not None and (bulk / name).is_file() and not (bulk / name).is_symlink():
                        fetched = bulk / name
                    else:
                        fetched = Path(client().download_artifacts(run_id, f"{ck.ARTIFACT_DIR}/{name}", str(one)))
                except (MlflowException, OSError) as err:
                    raise_if_refused(err)  # a refusal is not a missing file (tc.tracking.access)
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


def load_run_checkpoints(
    run_id: str,
    model: Any,
    checkpoints: CheckpointSpec | str = "all",
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


def load_analysis_inputs(cfg: AnalyzeConfig) -> AnalysisInputs:
    """Everything `tc.analysis.run.analyze_run` needs for `cfg.run_id`: its selected checkpoints (verified), its
    data set and its `RunContext` (architecture, minibatch size and seed, the reference run's last checkpoint,
    seconds per epoch, the step-0 checkpoint when the selection left it out, its training curve). A user model's
    code comes only from `cfg.model`, the command line."""
    unlogged: list[str] = []  # settings an own-loop run did not log: the analysis says what it assumed
    train_cfg = load_train_config(cfg.run_id, unlogged)
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
    # One download (one index read, one hash check per file) of the selection and step 0 only, both chosen from
    # that one index: a selection of 6 out of 9 checkpoints (the quick start), or of a few out of hundreds,
    # fetches and loads just those.
    chosen = CheckpointSpec("list")  # the selection, as the list of steps `wanted` found in the index

    def wanted(steps: list[int]) -> set[int]:
        nonlocal chosen
        chosen = CheckpointSpec("list", steps=tuple(select_steps(cfg.checkpoint_spec, steps)))
        i0 = ck.init_index(steps)
        return {*chosen.steps, *([steps[i0]] if i0 is not None else [])}

    files = download_checkpoints(cfg.run_id, cache.checkpoint_root(), steps=wanted)
    # the cache cap spares the reference run, loaded next, as that load spares this one
    keep = (cfg.reference_run_id,) if cfg.reference_run_id else ()
    ckpts = load_run_checkpoints(cfg.run_id, model, chosen, keep=keep, files=files)
    reference = None
    if cfg.reference_run_id:
        reference = load_final_checkpoint(cfg.reference_run_id, model, keep=(cfg.run_id,))
    # gm_dist_init measures from step 0 whatever the selection (a list of steps may leave it out)
    i0 = ck.init_index(ckpts.steps)
    init = ckpts.state_dicts[i0] if i0 is not None else load_initial_state(cfg.run_id, model, files)
    run = RunContext(
        model, train_cfg.batch_size, train_cfg.seed, reference, seconds_per_epoch(cfg.run_id), init, tuple(unlogged)
    )
    return AnalysisInputs(ckpts, data, replace(run, history=training_history(cfg.run_id, train_cfg.target_loss)))


def training_history(run_id: str, target_loss: float) -> TrainingHistory | None:
    """The run's per-epoch `train_loss` and `train_eval_loss` curves (MLflow step = optimizer step) and its
    target_loss, for the learning-speed measures; None when it logged neither (a user's own loop that logged no
    training loss: the measures are then not asked for)."""
    train_loss, criterion = metric_curve(run_id, "train_loss"), metric_curve(run_id, "train_eval_loss")
    if not train_loss and not criterion:
        return None
    return TrainingHistory(train_loss, criterion, target_loss)
