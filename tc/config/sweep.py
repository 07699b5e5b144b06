"""`SweepConfig`: the `sweep` entry point's parameters (docs/sweep.md)."""

from __future__ import annotations

from dataclasses import dataclass

from tc.config.fields import check_range, opt, validate_choices
from tc.config.vocabulary import DATASETS, MATRICES, MODELS, PRUNERS, SAMPLERS

#: What a sweep trial's analysis computes (`SweepConfig.analysis`; `tc.sweep.trial.analysis_config` says how):
#: core, the cheap default; measures, every measure (the report's sweeps); full, the analyze entry point's analysis.
TRIAL_ANALYSES = ("core", "measures", "full")


@dataclass(frozen=True)
class SweepConfig:
    """An Optuna study over training hyperparameters; every trial trains (every checkpoint logged) and is
    analyzed, as a nested MLflow run. Fixed training settings are the TrainConfig defaults unless set here."""

    n_trials: int = opt(
        20,
        "trials in the whole study, counted over all workers (finished, pruned, or failed by their own doing; "
        "crashed trials do not count)",
    )
    timeout: float = opt(0.0, "stop this worker after this many seconds; 0 = no limit")
    study_name: str = opt("tc-sweep", "Optuna study name; workers with the same name and storage share it")
    storage: str | None = opt(
        None,
        "an Optuna journal file path, or an SQLAlchemy URL (postgresql+psycopg2://user@host/db, its password from "
        "PGPASSWORD or ~/.pgpass); none = optuna_journal.log",
    )
    search_space: str | None = opt(None, "YAML/JSON file of parameter -> {type, low, high, log | choices}")
    sampler: str = opt(
        "qmc",
        "Optuna sampler: qmc (scrambled Sobol, space-filling; the default: the sweep observes how measures "
        "correlate with test accuracy and does not optimise), random, grid (exact groups for Ψ), or tpe "
        "(optimises test accuracy: correlations are then estimated along an optimiser's path)",
        SAMPLERS,
    )
    pruner: str = opt(
        "none", "prune trials whose test accuracy lags the median at the same epoch (needs test_every >= 1)", PRUNERS
    )
    seed: int = opt(0, "sampler seed (reproducible only with one worker) and every trial's training seed")
    dataset: str = opt("digits", "data set of every trial", DATASETS)
    model: str = opt("mlp", "architecture of every trial", MODELS)
    depth: int = opt(0, "model depth of every trial; 0 = the model's default")
    epochs: int = opt(300, "epochs of every trial; with target_loss, the cap")
    target_loss: float = opt(
        0.01,
        "train every trial until its training cross-entropy (own labels, whole training set) is <= this "
        "(Jiang et al. 2020: equal fit); 0 = off. Trials that reach the cap first are reported apart",
    )
    test_every: int = opt(
        0,
        "epochs between test-set evaluations in every trial's training; 0 = at the last epoch only: the final test "
        "accuracy, all the sweep reads, is the same, and a trial on a small training set with a large test set "
        "trains many times faster; pruner=median needs >= 1 (it compares test accuracy epoch by epoch)",
    )
    seeds: int = opt(
        2,
        "training seeds per configuration (2: gm_disagreement, gm_js_disagreement, and with analysis=measures or "
        "full <measure>_seed_sd); 1 or 2",
    )
    max_samples: int = opt(500, "analysis: examples per split")
    analysis: str = opt(
        "core",
        "what each trial's analysis computes, and so what the correlation table ranks: core (the fast default: the "
        "consistency scores on the test split, the cheap measures gm_* of the final checkpoint, the learning-speed "
        "measures and the cheap surrogates), measures (also the train and corrupt splits' scores, the cross-seed "
        "control, gm_sharpness, tc_mmd and the second seed's analysis with the <measure>_seed_sd spreads: what the "
        "report reads), or full (everything analyze computes, written "
        "back with its tables and figures); core and measures write back the metrics alone",
        TRIAL_ANALYSES,
    )
    analyze_matrix: str = opt(
        "final", "analysis=full: final (scores only, fast) or full (every (t1, t2) pair, lag curves)", MATRICES
    )
    anisotropy: bool = opt(
        False,
        "analysis: also the anisotropy statistics aniso_* (then ranked too; they cost several times the rest of a "
        "trial's analysis)",
    )
    bootstrap: int = opt(1000, "bootstrap resamples for the confidence intervals")

    def __post_init__(self) -> None:
        validate_choices(self)
        check_range("n_trials", self.n_trials, 1)
        check_range("timeout", self.timeout, 0.0)
        check_range("epochs", self.epochs, 1)
        check_range("target_loss", self.target_loss, 0.0)
        check_range("seeds", self.seeds, 1, 2)
        check_range("test_every", self.test_every, 0)
        if self.pruner != "none" and self.test_every == 0:
            raise ValueError(
                f"pruner={self.pruner} needs test_every >= 1: it compares each trial's test accuracy epoch by epoch, "
                "and test_every=0 evaluates the test set at the last epoch only; pass -P test_every=1 (or pruner=none)"
            )
        check_range("max_samples", self.max_samples, 0)
        check_range("bootstrap", self.bootstrap, 100)
        if not self.study_name.strip():
            raise ValueError("study_name must not be empty")
