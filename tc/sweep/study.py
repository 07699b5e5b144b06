"""The Optuna study a sweep's workers share: its storage, samplers re-seeded per trial, the pruner, creating or
joining it, failing dead workers' trials, and the loop that runs one worker's trials.

Several workers (processes or machines) with the same study name, storage and tracking server share one study;
trial numbers are unique in it, which is what re-seeding and the budget (`tc.sweep.budget`) rely on. What a
trial does is `tc.sweep.trial`; MLflow goes through `tc.tracking` only. Optuna is reached through its public
API, except a study's storage (`study_storage`), GridSampler's choice seed (`_seed_grid_choice`) and
QMCSampler's Sobol index (`ClaimedQMCSampler`), which Optuna does not expose; each is one small piece, and a
test fails if Optuna changes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from tc.config import SweepConfig
from tc.sweep.budget import CRASH_ATTR, SURPLUS_ATTR, SurplusTrial, budget_used
from tc.sweep.space import grid_of
from tc.tracking import client, writers
from tc.tracking.access import ServerRefusal
from tc.tracking.secrets import mask_text

# ---- storage ------------------------------------------------------------------------------------------------


TABLE_RACE_ATTEMPTS = 5  # tries to open an RDB whose tables another worker is creating at the same moment
# PostgreSQL's SQLSTATEs for the loser of that race: duplicate_table, duplicate_object (a type)
_RACE_SQLSTATES = {"42P07", "42710"}


def _lost_table_race(e: Exception) -> bool:
    """Whether `e` is a worker losing the race to create Optuna's tables on a fresh database: a duplicate key in
    PostgreSQL's catalog (IntegrityError, `CREATE TYPE studydirection`), or a table or type that already exists.
    Any other error (a refused connection, a bad URL option, no permission) is the user's to see at once."""
    from sqlalchemy.exc import DBAPIError, IntegrityError

    if isinstance(e, IntegrityError):
        return True
    orig = getattr(e, "orig", None)
    return isinstance(e, DBAPIError) and (
        getattr(orig, "pgcode", None) in _RACE_SQLSTATES or "already exists" in str(orig)
    )


def open_storage(spec: str) -> optuna.storages.BaseStorage:
    """An Optuna storage: an SQLAlchemy URL (anything with ://) becomes an RDBStorage with heartbeats (so a
    killed worker's trial is marked FAILED, not left RUNNING); anything else is a journal file path."""
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    if "://" in spec:
        for attempt in range(TABLE_RACE_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: stable
                    # A trial whose worker stopped beating for grace_period s is FAILED by the next worker that
                    # starts a trial, and RetryFailedTrialCallback re-queues its parameters once as a new trial.
                    return RDBStorage(
                        spec,
                        heartbeat_interval=30,
                        grace_period=120,
                        heartbeat_stale_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
                    )
            except Exception as e:  # sqlalchemy raises many kinds: bad dialect, refused connection, bad auth
                # Workers that start together on a fresh database race to create Optuna's tables (PostgreSQL:
                # a duplicate type or relation); the loser finds them made when it tries again.
                if _lost_table_race(e) and attempt + 1 < TABLE_RACE_ATTEMPTS:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise ValueError(
                    mask_text(f"storage={spec!r}: cannot open this database: {type(e).__name__}: {e}")[:600]
                ) from e
    path = Path(spec).expanduser()
    if not path.parent.is_dir():
        raise ValueError(f"storage={spec!r}: directory {path.parent} does not exist")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(path)))


def default_storage(uri: str) -> str:
    """optuna_journal.log next to the MLflow sqlite store at tracking `uri`, or in the working directory."""
    if uri.startswith("sqlite:///"):
        return str(Path(uri.removeprefix("sqlite:///")).parent / "optuna_journal.log")
    return "optuna_journal.log"


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage `study` reads and writes through. Optuna has no public accessor for it, and the object a
    caller opened is not always it (`optuna.create_study` wraps an RDBStorage in a cache), so this reads the
    study's private `_storage`: a change in Optuna fails here, by name (tests/test_sweep.py checks it)."""
    storage = getattr(study, "_storage", None)
    if not isinstance(storage, optuna.storages.BaseStorage):
        raise RuntimeError("this Optuna keeps a study's storage elsewhere: update tc.sweep.study.study_storage")
    return storage


# ---- samplers and pruner ------------------------------------------------------------------------------------


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler re-seeded at every trial from (seed, trial number).

    Trial numbers are unique in a study (the storage assigns them), so a restarted worker and several
    workers started with the same seed never draw from the same random stream, while one worker on a fresh
    study stays reproducible (its trial numbers are 0, 1, 2, ...). A plain `TPESampler(seed)` in each
    process repeats the same draws."""

    def __init__(self, make, seed: int):
        self._make, self._seed = make, seed
        self._inner = make(seed)

    @staticmethod
    def trial_seed(seed: int, number: int) -> int:
        return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])

    def before_trial(self, study, trial):
        self._inner = self._make(self.trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


def make_sampler(name: str, space: dict, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler `name` (tpe, random, grid, qmc) over `space`, re-seeded per trial (`TrialSeededSampler`)."""
    makers = {
        # constant_liar: running trials of other workers count as bad results, so workers spread out
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s, constant_liar=True),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "grid": lambda s: _grid_sampler(grid_of(space), seed, s),
        # one scramble seed for all workers (the Sobol index lives in the study); per-trial seed for trial 0
        "qmc": lambda s: qmc_sampler(seed, independent_seed=s),
    }
    return TrialSeededSampler(makers[name], seed)


def qmc_sampler(seed: int, independent_seed: int | None = None) -> optuna.samplers.QMCSampler:
    """Optuna's scrambled-Sobol QMCSampler: a space-filling design over the study's relative search space,
    categorical parameters included (Optuna 5.1 gives each one a Sobol coordinate). One scramble seed for the
    whole study, so that workers share one low-discrepancy sequence; each Sobol index is claimed by one trial
    (`ClaimedQMCSampler`). Optuna samples the study's first trial independently (it learns the space from
    it), with a RandomSampler seeded by `independent_seed` (default `seed`); the Sobol sequence starts after it."""
    independent = seed if independent_seed is None else independent_seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return ClaimedQMCSampler(
            qmc_type="sobol",
            scramble=True,
            seed=seed,
            independent_sampler=optuna.samplers.RandomSampler(seed=independent),
            warn_independent_sampling=False,
            warn_asynchronous_seeding=False,
        )


QMC_CLAIM_PREFIX = "tc.qmc:"  # trial system attr: the Sobol index this trial took, per sequence


class ClaimedQMCSampler(optuna.samplers.QMCSampler):
    """QMCSampler whose Sobol indices are claimed, not just counted.

    Optuna keeps the next index in a study attribute and takes it with a read, then a write, which its own
    comment says is not atomic: two workers that sample at the same moment read the same index and draw the
    same point (CI: two workers restarted together on PostgreSQL completed two trials with identical
    parameters). Here a trial also writes the index it took into its own system attrs and then reads the
    study's trials back: if another trial holds that index, it takes the next one. Of two trials that took
    one index, the one that reads last sees the other (each reads after its own write), so no two trials keep
    the same index (both may move on: a skipped index is a gap in the design, not a repeat). One worker alone
    never meets a claim, so its sequence is Optuna's, point for point. `_find_sample_id` is Optuna's private
    hook, called only from `sample_relative`; a test fails if Optuna renames it."""

    MAX_CLAIMS = 1000  # indices tried before giving up: only a storage that loses writes can reach it

    def sample_relative(self, study, trial, search_space):
        self._trial = trial  # the trial `_find_sample_id` claims for (Optuna does not pass it)
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study: optuna.Study, search_space: dict) -> int:
        trial, storage = self._trial, study_storage(study)
        key = QMC_CLAIM_PREFIX + self._sequence_key(search_space)
        for _ in range(self.MAX_CLAIMS):
            sample_id = super()._find_sample_id(study, search_space)
            storage.set_trial_system_attr(trial._trial_id, key, sample_id)
            others = study.get_trials(deepcopy=False)
            if not any(t.number != trial.number and t.system_attrs.get(key) == sample_id for t in others):
                return sample_id
        raise RuntimeError(f"trial {trial.number}: no free Sobol index after {self.MAX_CLAIMS} claims")

    def _sequence_key(self, search_space: dict) -> str:
        """Optuna's key for the sequence it counts (a prefix of its hash): unscrambled, the seed is no part of it."""
        space = {name: str(dist) for name, dist in sorted(search_space.items())}
        seeded = {"scramble": True, "seed": self._seed} if self._scramble else {"scramble": False}
        text = json.dumps({"qmc_type": self._qmc_type, "search_space": space, **seeded})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _grid_sampler(grid: dict, seed: int, trial_seed: int) -> optuna.samplers.GridSampler:
    """GridSampler shuffles its grid with `seed` (grid ids must mean the same points in every worker), then
    picks among the unvisited ids with its rng, which gets the per-trial seed so that workers differ."""
    sampler = optuna.samplers.GridSampler(grid, seed=seed)
    _seed_grid_choice(sampler, trial_seed)
    return sampler


def _seed_grid_choice(sampler: optuna.samplers.GridSampler, seed: int) -> None:
    """Seed GridSampler's choice among unvisited grid points, and only that. Its one public `seed` also
    shuffles the grid, which must not differ between workers, and its public `reseed_rng` draws from the OS,
    which makes one worker irreproducible; so this seeds the private `_rng` (tests/test_sweep.py checks it)."""
    sampler._rng.rng.seed(seed % 2**32)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """`median`: stop a trial whose test accuracy is below the median of earlier trials at the same epoch
    (after 3 trials); `none`: never."""
    return optuna.pruners.MedianPruner(n_startup_trials=3) if name == "median" else optuna.pruners.NopPruner()


# ---- the study ----------------------------------------------------------------------------------------------


def load_or_create(cfg: SweepConfig, storage, sampler, pruner) -> optuna.Study:
    """The study (created or joined), its objective named test_acc for optuna-dashboard."""
    study = _load_or_create(cfg, storage, sampler, pruner)
    with warnings.catch_warnings():  # set_metric_names is "experimental" since Optuna 3.2
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["test_acc"])  # optuna-dashboard shows "test_acc", not "Objective 0"
    return study


def _load_or_create(cfg: SweepConfig, storage, sampler, pruner) -> optuna.Study:
    # Workers starting together race to create the study (and an RDB's tables): retry briefly.
    for attempt in range(5):
        try:
            return optuna.create_study(
                study_name=cfg.study_name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction="maximize",
                load_if_exists=True,
            )
        except Exception:  # DuplicatedStudyError, or an IntegrityError from concurrent table creation
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


WORKER_ATTR = "tc.worker"  # {"host", "pid", "start", "at"} of the process running the trial
STALE_ATTR = "tc.stale"  # user attr of a dead worker's trial, FAILED by a later sweep: why


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAILED every RUNNING trial whose worker (recorded in its user attrs) was on this host and is dead, with
    its MLflow run (even ended: killed after it, before Optuna recorded the trial) and its worker's sweep run (if
    RUNNING). Journal files have no heartbeat: without this a killed worker's trial stays RUNNING forever. Trials of
    other hosts are left to RDB heartbeats. The stale-trial callback (RDB: retry) runs for these. Returns numbers."""
    failed = []
    storage = study_storage(study)
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = json.loads(t.user_attrs.get(WORKER_ATTR) or "{}")
        if not worker or writers.writer_alive(worker) is not False:
            continue
        if t.datetime_start and t.datetime_start.timestamp() > worker.get("at", math.inf):
            continue  # a re-queued trial (RetryFailedTrialCallback) that still carries its dead predecessor's attrs
        reason = f"its worker (pid {worker['pid']}) died; marked FAILED by a later sweep"
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, STALE_ATTR, reason)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        for key in ("mlflow_run_id", "tc.sweep_run_id"):
            run_id = t.user_attrs.get(key)
            try:  # a sweep run that ended: its worker ended, and this is a re-queued trial's stale copy of the attr
                status = client.get_run(run_id).info.status if run_id else "FAILED"
                if status == "RUNNING" or (status != "FAILED" and key == "mlflow_run_id"):
                    client.client().set_tag(run_id, "tc.error", reason)
                    client.client().set_terminated(run_id, "FAILED")
            except LookupError:  # a run on another tracking server: the trial is failed all the same
                print(f"tc sweep: run {run_id} of dead trial {t.number} is not on this tracking server", flush=True)
        callback = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        if callback is not None:
            callback(study, storage.get_trial(trial_id))
    return failed


# ---- one worker's trials ------------------------------------------------------------------------------------

#: crashed trials in a row after which a worker stops (`tc.sweep.trial` has the policy)
MAX_CONSECUTIVE_CRASHES = 3


class TrialCrashed(Exception):
    """A trial ended by an unexpected exception (`tc.sweep.trial`: CRASHED); the worker goes on."""


class SystematicFailure(RuntimeError):
    """`MAX_CONSECUTIVE_CRASHES` trials in a row crashed: the worker stopped."""


def run_worker(
    study: optuna.Study,
    func,
    n_trials: int,
    timeout: float = 0.0,
    max_consecutive_crashes: int = MAX_CONSECUTIVE_CRASHES,
    callbacks: tuple = (),
) -> None:
    """Run trials one at a time until the study holds n_trials that count (over all workers; see
    `tc.sweep.budget`). The budget is checked before each trial and again inside it against the trials
    numbered before it, so workers that start their last trials together do not overshoot: the surplus one
    is FAILED at once and does not count. A queued trial (a crashed grid point's rerun) runs even when the
    budget is full, as it counts already. A crashed trial (`TrialCrashed`) does not stop the worker, but
    `max_consecutive_crashes` in a row raise `SystematicFailure`. `callbacks`: more Optuna callbacks, called
    after each trial (the sweep's per-trial line, `tc.sweep.console.TrialLines`)."""
    start = time.monotonic()
    surplus: list[str] = []
    crashes: list[str] = []  # the crashes since the last trial that did not crash

    def watch(_study, trial) -> None:
        if SURPLUS_ATTR in trial.user_attrs:
            surplus.append(trial.user_attrs[SURPLUS_ATTR])
        elif CRASH_ATTR in trial.user_attrs:
            crashes.append(f"trial {trial.number}: {trial.user_attrs[CRASH_ATTR]}")
        else:
            crashes.clear()

    # a queued trial (a crashed grid point's rerun) counts toward the budget already, and runs even then
    while not surplus and (budget_used(study) < n_trials or _queued(study)):
        left = timeout - (time.monotonic() - start) if timeout else None
        if left is not None and left <= 0:
            break
        with _no_refusal_traceback():
            study.optimize(
                func,
                n_trials=1,
                timeout=left,
                catch=(SurplusTrial, TrialCrashed),
                callbacks=[watch, *callbacks],
                gc_after_trial=True,
            )
        if len(crashes) >= max_consecutive_crashes:
            raise SystematicFailure(
                f"{len(crashes)} trials in a row crashed, so the error is systematic (a bug or a broken environment, "
                f"not the trials' configurations): this worker stops rather than spend the study on it. Last: "
                f"{crashes[-1]}. The tracebacks are above; crashed trials do not count toward n_trials, so the same "
                "command continues the study once the cause is fixed."
            )


class _RefusalLine(logging.Filter):
    """Optuna logs the exception that ended a trial with its traceback; a server's refusal (`ServerRefusal`) is
    one line that says it all (`tc.tracking.access`), so its record keeps the message and drops the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ServerRefusal):
            record.exc_info, record.exc_text = None, None
        return True


@contextlib.contextmanager
def _no_refusal_traceback():
    """`_RefusalLine` on the logger of Optuna's optimize loop, for the block."""
    logger, line = logging.getLogger("optuna.study._optimize"), _RefusalLine()
    logger.addFilter(line)
    try:
        yield
    finally:
        logger.removeFilter(line)


def _queued(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
