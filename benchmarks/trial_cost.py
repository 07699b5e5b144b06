"""What a sweep trial's analysis costs against its training, at the report's sweep settings, in one run.

    python benchmarks/trial_cost.py                     # 5 trials, analysis=core then measures, per trial
    python benchmarks/trial_cost.py --env conv --trials 4 --analysis core
    python benchmarks/trial_cost.py --trials 2 --analysis core,measures,full
    python benchmarks/trial_cost.py --trials 1 --profile 40   # cProfile of the first trial's analysis

The trials are a report environment's sweep (`tc.report.experiments.sweep_config` at the full report's settings;
`--env`, default the first: digits MLP, QMC over the default space fitted to digits, two seeds, target_loss 0.01,
500 samples per split, no anisotropy; conv: a ResNet on 500 Fashion-MNIST images, 200 samples per split), with the
trial analysis `--analysis` (the sweep's `analysis`: core, its default, measures, the report's, or full; a comma
list runs each in turn on every trial), drawn by the sweep's own sampler in a fresh local sqlite store, trained by
`tc.sweep.trial.train_trial` and analyzed by `tc.sweep.trial.analyze_trial`, as the sweep does. Per trial it prints
the training wall time (both seeds, with their checkpoint logging), the analysis wall time (the seeds it analyzes,
`analyzed_seed`: load with a fresh checkpoint cache, analysis, cheap surrogates, seed spread, write-back, labels),
their ratio (the issue's target: <= 25%), where the analysis time went, and, with several analyses, whether every
measure of each one's correlation table (`tc.sweep.summary.measure_columns`) has the same value in the next one,
which computes more.
"""

from __future__ import annotations

import argparse
import atexit
import cProfile
import itertools
import math
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's tc
    sys.path.insert(0, str(ROOT))

# What the analysis' time is split into: (module, function) wrapped with a timer for the whole run.
PARTS = {
    "load": ("tc.tracking.jobs", "load_analysis_inputs"),
    "analyze_run": ("tc.tracking.jobs", "analyze_run"),
    "surrogates": ("tc.sweep.trial", "cheap_scores"),
    "write-back": ("tc.tracking.jobs", "log_analysis_result"),
    "labels": ("tc.tracking.jobs", "label_analyzed"),
}


def timed_parts(spent: dict[str, float]) -> None:
    """Wrap each function of `PARTS` so that its wall time adds up in `spent` under the part's name."""
    import importlib

    for part, (module, name) in PARTS.items():
        mod = importlib.import_module(module)
        inner = getattr(mod, name)

        def wrapper(*a, _inner=inner, _part=part, **k):
            t0 = time.perf_counter()
            try:
                return _inner(*a, **k)
            finally:
                spent[_part] += time.perf_counter() - t0

        setattr(mod, name, wrapper)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--analysis", default="core,measures", help="comma list of core, measures, full (in that order)")
    p.add_argument("--profile", type=int, default=0, help="print the top N cProfile lines of trial 0's analysis")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default); 1 damps a loaded machine"
    )
    p.add_argument("--checkpoints", default="", help="analyze these checkpoints (e.g. fractions:16): a cut to measure")
    p.add_argument("--max_samples", type=int, default=0, help="examples per split (0: the sweep's 500): a cut")
    p.add_argument("--profile_sort", default="cumulative", help="pstats sort key: cumulative or tottime")
    p.add_argument("--keep", action="store_true", help="keep the temporary store (runs, checkpoints) to inspect")
    p.add_argument("--env", default="", help="the report environment whose sweep to run (default: the first)")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = tempfile.mkdtemp(prefix="tc-trial-cost-")
    if args.keep:
        print(f"# the store: {tmp}", flush=True)
    else:  # every trial's checkpoints, twice per mode: not left behind in /tmp
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    os.chdir(tmp)  # the sqlite store, its artifacts and the Optuna journal live here
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ.setdefault("TC_PROGRESS", "0")
    import mlflow
    import optuna

    from tc.config.sweep import TRIAL_ANALYSES
    from tc.core.device import cpu_description
    from tc.report import experiments
    from tc.sweep import trial as T
    from tc.sweep.space import fitted_space, suggest
    from tc.sweep.study import make_sampler
    from tc.sweep.summary import measure_columns
    from tc.tracking import client
    from tc.tracking.analyses import current_analysis

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = experiments.settings(quick=False, trials=48, root=ROOT)
    envs = {e.name: e for e in settings.environments}
    if args.env and args.env not in envs:
        p.error(f"--env {args.env}: the report's environments are {', '.join(envs)}")
    cfg = experiments.sweep_config(settings, envs.get(args.env))
    if args.max_samples:
        cfg = replace(cfg, max_samples=args.max_samples)
    space = fitted_space(cfg)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(cfg.sampler, space, cfg.seed))
    spent: dict[str, float] = defaultdict(float)
    timed_parts(spent)
    modes = tuple(args.analysis.split(","))
    if not modes or any(m not in TRIAL_ANALYSES for m in modes):
        p.error(f"--analysis {args.analysis}: a comma list of {', '.join(TRIAL_ANALYSES)}")
    print(
        f"# trial cost: the report's sweep ({cfg.dataset} {cfg.model}, {cfg.sampler}, seeds {cfg.seeds}, "
        f"target_loss {cfg.target_loss}, max_samples {cfg.max_samples}, anisotropy {cfg.anisotropy}); "
        f"{cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    rows, diffs = [], []
    mlflow.set_experiment("trial-cost")
    with mlflow.start_run(run_name="sweep") as parent:
        for _ in range(args.trials):
            trial = study.ask()
            values = suggest(trial, space)
            with client.nested_run(T.trial_tags(cfg, trial.number, parent.info.run_id), f"trial {trial.number}") as rid:
                t0 = time.perf_counter()
                second = T.train_trial(cfg, trial, T.trial_config(cfg, values), rid, parent.info.run_id)
                train_s = time.perf_counter() - t0
                seeds = [i for i in (rid, second) if i]
                epochs = sum(client.get_run(i).data.metrics["epochs_trained"] for i in seeds)
                ckpts = [len(client.client().list_artifacts(i, "checkpoints")) - 1 for i in seeds]
                got = {}
                for mode in modes:
                    spent.clear()
                    mode_cfg = replace(cfg, analysis=mode)
                    acfg = T.analysis_config(mode_cfg, rid, second)
                    if args.checkpoints:
                        acfg = replace(acfg, checkpoints=args.checkpoints)
                    # a fresh checkpoint cache: a trial's analysis downloads its new runs' checkpoints
                    os.environ["TC_CACHE_DIR"] = tempfile.mkdtemp(dir=tmp, prefix=f"cache-{trial.number}-{mode}-")
                    prof = cProfile.Profile() if args.profile and trial.number == 0 else None
                    t0 = time.perf_counter()
                    if prof:
                        prof.enable()
                    T.analyze_trial(acfg, parent.info.run_id, T.analyzed_seed(mode_cfg, second))
                    if prof:
                        prof.disable()
                    analysis_s = time.perf_counter() - t0
                    got[mode] = current_analysis(rid)[1]
                    parts = ", ".join(f"{k} {v:.1f}" for k, v in spent.items())
                    timers = {k: v for k, v in got[mode].items() if k.endswith("_seconds") and v >= 0.05}
                    parts += "; first seed's timers: " + ", ".join(f"{k} {v:.1f}" for k, v in timers.items())
                    rows.append((trial.number, mode, epochs, ckpts, train_s, analysis_s, parts))
                    print(
                        f"trial {trial.number} {mode}: train {train_s:.1f} s ({epochs:.0f} epochs, checkpoints "
                        f"{ckpts}), analysis {analysis_s:.1f} s = {analysis_s / train_s:.0%} of training [{parts}]",
                        flush=True,
                    )
                    if prof:
                        pstats.Stats(prof).sort_stats(args.profile_sort).print_stats(args.profile)
                for smaller, larger in itertools.pairwise(modes):
                    diffs.append(compare(trial.number, (smaller, got[smaller]), (larger, got[larger]), measure_columns))
            study.tell(trial, float(client.get_run(rid).data.metrics["test_acc"]))

    print("\n| trial | analysis | epochs (both seeds) | checkpoints | train (s) | analysis (s) | ratio | split |")
    print("|---|---|---|---|---|---|---|---|")
    for n, mode, epochs, ckpts, train_s, analysis_s, parts in rows:
        print(
            f"| {n} | {mode} | {epochs:.0f} | {'+'.join(map(str, ckpts))} | {train_s:.1f} | {analysis_s:.1f} | "
            f"{analysis_s / train_s:.0%} | {parts} |"
        )
    if diffs:
        print(
            f"\n{' vs '.join(modes)}: "
            + ("every measure equal" if all(d == 0 for d in diffs) else f"{sum(diffs)} measures differ (above)")
        )
    sys.stdout.flush()


def compare(number: int, smaller: tuple[str, dict[str, float]], larger: tuple[str, dict[str, float]], columns) -> int:
    """Print and count the measures of the `smaller` analysis's correlation table (`columns`: `measure_columns`)
    that the `larger` one (a (mode, metrics) pair each) lacks or gives another value."""
    (a_name, a), (b_name, b) = smaller, larger
    wanted = sorted(columns(list(a)))
    bad = 0
    for m in wanted:
        x, y = a[m], b.get(m)
        if not (y is not None and (x == y or (math.isnan(x) and math.isnan(y)))):
            bad += 1
            print(f"  trial {number}: {m}: {a_name} {x} != {b_name} {y}")
    extra = sorted(set(columns(list(b))) - set(wanted))
    print(
        f"  trial {number}: {len(wanted)} measures of {a_name} compared, {bad} differ; only in {b_name}: {extra}",
        flush=True,
    )
    return bad


if __name__ == "__main__":
    main()
