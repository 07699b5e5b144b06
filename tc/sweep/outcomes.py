"""How a sweep's trials ended, in counts and reasons, and what that allows the correlations to say.

Words, used in one sense each (console, the sweep run's description, its `summary.json`):
- *finished*: trained and analyzed (Optuna COMPLETE): a row of trials.csv.
- *converged*: finished, and every seed reached `target_loss` before the epoch cap; only these enter the
  correlations. A finished trial that did not converge *hit the epoch cap* and is left out (equal fit). Without a
  stopping criterion (`target_loss=0`) every finished trial enters.
- *failed*: ended by its own doing (divergence, a sampled combination refused as untrainable, out of memory:
  `tc.sweep.trial`); it counts toward n_trials. *crashed*: an error of tc or its environment; it does not count.
  *pruned*: stopped by the pruner. *died*: its worker died (`tc.sweep.study.fail_dead_trials`). *running*: another
  worker's trial, still going. Surplus trials (`tc.sweep.budget.SURPLUS_ATTR`) never ran and are not listed.

Thresholds: correlations need `MIN_TRIALS` trials (`tc.stats.rankcorr`); below `MIN_INTERPRETABLE_TRIALS` they
are computed and logged but called not interpretable (`tau_null_bound` says why).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import optuna
import pandas as pd

from tc.config import SweepConfig
from tc.stats.rankcorr import MIN_TRIALS
from tc.sweep.budget import CRASH_ATTR, FAIL_REASON_ATTR, SURPLUS_ATTR
from tc.sweep.study import STALE_ATTR

PRUNED_ATTR = "tc.pruned"  # user attr of a pruned trial: the pruner's reason (`tc.sweep.trial`)
WARNINGS_ATTR = "tc.warnings"  # user attr of a finished trial: its analyses' warnings (`tc.sweep.trial`)

#: The largest |τ| that unrelated rankings may reach by chance (5%) at which coefficients are called interpretable.
MAX_CHANCE_TAU = 0.5
#: The fewest trials whose coefficients the sweep calls interpretable: the smallest n at which unrelated rankings
#: of n trials reach |τ| >= MAX_CHANCE_TAU at most one time in 20 (one time in 13 at n = 9, in 21 at n = 10;
#: `tau_null_bound`'s 5% critical value is 0.50 at n = 9, 0.47 at n = 10; tests/test_sweep_outcomes.py). Below
#: it a |τ| of 0.5 is what chance alone gives; below 5 trials no Kendall test can reach p < 0.05 at all (the
#: smallest two-sided p is 2/n!: 0.083 at n = 4).
MIN_INTERPRETABLE_TRIALS = 10


def tau_null(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact distribution of Kendall's τ between two unrelated rankings of n trials (no ties; sampling unit:
    the trial): (τ values, probabilities). A ranking with k discordant pairs has τ = 1 - 4k / (n(n - 1)), and
    the number of permutations of n with k inversions is the Mahonian number, the coefficient of x^k in
    prod_{m=1..n} (1 + x + ... + x^(m-1))."""
    counts = np.ones(1)
    for m in range(2, n + 1):
        counts = np.convolve(counts, np.ones(m))
    k = np.arange(len(counts))
    return 1 - 4 * k / max(n * (n - 1), 1), counts / counts.sum()


def tau_null_bound(n: int, level: float = 0.05) -> tuple[float, float]:
    """(c, P(|τ| >= c)) for unrelated rankings of n >= 2 trials (`tau_null`): c is the smallest value that |τ|
    exceeds with probability <= `level`, so a |τ| up to c is what chance alone gives one time in 1 / P."""
    tau, prob = tau_null(n)
    a = np.round(np.abs(tau), 12)
    c = min(v for v in np.unique(a) if prob[a > v].sum() <= level)
    return float(c), float(prob[a >= c].sum())


def null_words(n: int) -> str:
    """`two unrelated rankings of 6 trials give |τ| >= 0.73 one time in 18` (`tau_null_bound`)."""
    c, p = tau_null_bound(n)
    return f"two unrelated rankings of {n} trials give |τ| >= {c:.2f} one time in {1 / p:.0f}"


def short_reason(kind: str, text: str) -> str:
    """A failure's reason, shortened to what groups alike trials: `diverged`, `refused: the sampled combination
    cannot be trained`, `out of device memory`; a crash by its exception type; else the text's first clause."""
    text = text or "no reason recorded"
    if kind == "crashed":
        return text.split(":", 1)[0]
    if "diverged" in text:
        return "diverged"
    if "cannot be trained" in text:
        return "refused: the sampled combination cannot be trained"
    if "OutOfMemoryError" in text or "out of memory" in text:
        return "out of device memory"
    return re.split(r"[:;.]\s", text, maxsplit=1)[0][:80]


def classify(state: str, user_attrs: dict) -> tuple[str, str] | None:
    """(kind, reason) of a trial in Optuna `state` (a TrialState name) with `user_attrs` (the module doc's
    words); None for a surplus trial, which never ran."""
    if state == "COMPLETE":
        return "finished", ""
    if state == "PRUNED":
        return "pruned", user_attrs.get(PRUNED_ATTR, "")
    if state in ("RUNNING", "WAITING"):
        return "running", ""
    if SURPLUS_ATTR in user_attrs:
        return None
    if FAIL_REASON_ATTR in user_attrs:
        return "failed", user_attrs[FAIL_REASON_ATTR]
    if STALE_ATTR in user_attrs:
        return "died", user_attrs[STALE_ATTR]
    return "crashed", user_attrs.get(CRASH_ATTR, "")


def trial_outcomes(study: optuna.Study) -> pd.DataFrame:
    """One row per trial of `study` that ran or runs (every worker's): trial, kind, reason, seconds (None while
    running). The only part of this module that reads Optuna."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        got = classify(t.state.name, t.user_attrs)
        if got is not None:
            seconds = t.duration.total_seconds() if t.duration is not None else None
            rows.append({"trial": t.number, "kind": got[0], "reason": got[1], "seconds": seconds})
    return pd.DataFrame(rows, columns=["trial", "kind", "reason", "seconds"])


@dataclass(frozen=True)
class TrialAccount:
    """How the study's trials ended (the module doc's words). `criterion`: the stopping criterion's words
    ("" without one); the reason dicts map a short reason (`short_reason`) to a count."""

    criterion: str
    finished: int
    converged: int  # enter the correlations (every finished one without a criterion)
    failed: dict[str, int] = field(default_factory=dict)
    crashed: dict[str, int] = field(default_factory=dict)
    pruned: int = 0
    died: int = 0
    running: int = 0

    @property
    def capped(self) -> int:
        """Finished trials that hit the epoch cap first: left out of the correlations."""
        return self.finished - self.converged

    @property
    def total(self) -> int:
        failed, crashed = sum(self.failed.values()), sum(self.crashed.values())
        return self.finished + failed + crashed + self.pruned + self.died + self.running

    @property
    def word(self) -> str:
        """What the trials that enter the correlations are called: converged, or finished without a criterion."""
        return "converged" if self.criterion else "finished"

    def line(self) -> str:
        """One sentence: every trial, by how it ended and why (zero counts but finished left out)."""
        parts = [f"{self.finished} finished"]
        if self.criterion and self.finished:
            parts[0] += f", of which {self.converged} converged"
            if self.capped:
                why = f"hit the epoch cap, not reaching {self.criterion}"
                parts[0] += f" and {self.capped} {why} (left out of the correlations)"
        elif self.finished:
            parts[0] += " (no stopping criterion: all enter the correlations)"
        for kind, reasons, note in (
            ("failed", self.failed, ""),
            ("crashed", self.crashed, "; not counted toward n_trials"),
        ):
            if reasons:
                why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
                parts.append(f"{sum(reasons.values())} {kind} ({why}{note})")
        if self.pruned:
            parts.append(f"{self.pruned} pruned (test accuracy below the median at the same epoch)")
        if self.died:
            parts.append(f"{self.died} lost with their worker (not counted toward n_trials)")
        if self.running:
            parts.append(f"{self.running} still running in other workers")
        return f"{self.total} trial(s): " + "; ".join(parts)

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "finished": self.finished,
            "converged": self.converged if self.criterion else None,
            "in_correlations": self.converged,
            "hit_epoch_cap": self.capped,
            "failed": sum(self.failed.values()),
            "crashed": sum(self.crashed.values()),
            "pruned": self.pruned,
            "died": self.died,
            "running": self.running,
            "failed_reasons": dict(self.failed),
            "crashed_reasons": dict(self.crashed),
            "criterion": self.criterion or None,
        }


def criterion_words(cfg: SweepConfig) -> str:
    """The stopping criterion as the account names it: `target_loss 0.01 in 300 epochs`; "" without one."""
    if cfg.target_loss <= 0:
        return ""
    return f"target_loss {cfg.target_loss:g} in {cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"


def account(cfg: SweepConfig, finished: int, converged: int, outcomes: pd.DataFrame | None = None) -> TrialAccount:
    """The study's `TrialAccount`: `finished` and `converged` come from the trials table (`tc.sweep.summary`),
    every other kind from `outcomes` (`trial_outcomes`; None: finished trials only)."""
    rows = outcomes if outcomes is not None else pd.DataFrame(columns=["kind", "reason"])

    def reasons(kind: str) -> dict[str, int]:
        return dict(Counter(short_reason(kind, r) for r in rows.loc[rows["kind"] == kind, "reason"]))

    def count(kind: str) -> int:
        return int((rows["kind"] == kind).sum())

    return TrialAccount(
        criterion_words(cfg),
        finished,
        converged,
        failed=reasons("failed"),
        crashed=reasons("crashed"),
        pruned=count("pruned"),
        died=count("died"),
        running=count("running"),
    )


@dataclass(frozen=True)
class CorrelationStatus:
    """What the correlations of `n` trials (of `total`) may say. `kind`: `too_few` (none computed, n <
    MIN_TRIALS), `not_interpretable` (computed; n < MIN_INTERPRETABLE_TRIALS) or `computed`."""

    kind: str
    n: int
    total: int
    word: str  # converged, or finished without a stopping criterion

    @property
    def line(self) -> str:
        if self.kind == "too_few":
            return f"too few {self.word} trials ({self.n} of {self.total}; need {MIN_TRIALS}): no correlations computed"
        if self.kind == "not_interpretable":
            return (
                f"{self.n} {self.word} trials (of {self.total}): below {MIN_INTERPRETABLE_TRIALS} the coefficients are "
                f"not interpretable ({null_words(self.n)}); all are in correlations.csv"
            )
        return f"correlations over {self.n} {self.word} trials (of {self.total})"

    def as_dict(self) -> dict:
        return {
            "status": self.kind,
            "line": self.line,
            "n_trials": self.n,
            "of": self.total,
            "need": MIN_TRIALS,
            "interpretable_from": MIN_INTERPRETABLE_TRIALS,
        }


def correlation_status(acc: TrialAccount) -> CorrelationStatus:
    """The status of the correlations over the account's converged trials (`CorrelationStatus`)."""
    n = acc.converged
    kind = "too_few" if n < MIN_TRIALS else "not_interpretable" if n < MIN_INTERPRETABLE_TRIALS else "computed"
    return CorrelationStatus(kind, n, acc.total, acc.word)
