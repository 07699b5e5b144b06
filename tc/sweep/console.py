"""What a sweep prints: one line per trial with the time left (`TrialLines`), and the closing lines
(`closing_lines`): how the trials ended, what the correlations may say, and the τ of the headline first.

A trial's own training and analysis print nothing here: `tc.sweep.trial` keeps their lines (per-epoch progress
and the like) in the trial run's `trial_output.txt`, and `ProgressFilter` keeps their periodic progress lines off
standard error. Text is built by pure functions (a frozen Optuna trial or a table in, strings out); only
`TrialLines` reads the study and prints.
"""

from __future__ import annotations

import io
import math
import re
import sys
from typing import Any, TextIO

import optuna
import pandas as pd

from tc.stats.multiplicity import ALPHA
from tc.sweep.budget import FAIL_REASON_ATTR, SURPLUS_ATTR, budget_used
from tc.sweep.outcomes import PRUNED_ATTR, WARNINGS_ATTR, classify, trial_outcomes

TOP = 8  # measures listed after the headline when the coefficients are interpretable


def varying(space: dict[str, dict[str, Any]]) -> list[str]:
    """The parameters of `space` that take more than one value (those a trial's line shows)."""
    out = []
    for name, spec in space.items():
        values = spec.get("choices") if spec["type"] == "categorical" else [spec.get("low"), spec.get("high")]
        if len({repr(v) for v in values}) > 1:
            out.append(name)
    return out


def _value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def duration(seconds: float) -> str:
    """`9.4 s`, `42 s`, `2.6 min`, `12 min`, `3.5 h`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def trial_line(t: optuna.trial.FrozenTrial, shown: list[str], headline: str) -> str | None:
    """A finished trial in one line: number, the `shown` parameters, how it ended (converged, hit the epoch cap,
    failed and why, pruned, crashed), test accuracy, the `headline` measure, its analysis warnings
    (`warning_words`), wall seconds. None for a surplus trial (it never ran)."""
    got = classify(t.state.name, t.user_attrs)
    if got is None or SURPLUS_ATTR in t.user_attrs:
        return None
    kind = got[0]
    params = " ".join(f"{k}={_value(t.params[k])}" for k in shown if k in t.params) or "-"
    parts = [f"tc sweep: trial {t.number}", params]
    if kind == "finished":
        converged = t.user_attrs.get("converged")
        parts.append({1: "converged", 0: "hit the epoch cap"}.get(converged, "finished"))
        parts.append(f"test_acc {t.value:.4f}")
        v = t.user_attrs.get(headline)
        parts.append(f"{headline} {v:.4f}" if isinstance(v, (int, float)) else f"{headline} n/a")
        if warned := t.user_attrs.get(WARNINGS_ATTR):
            parts.append(warning_words(warned))
    elif kind == "pruned":
        parts.append(f"pruned: {t.user_attrs.get(PRUNED_ATTR, 'by the pruner')}")
    elif kind == "failed":
        parts.append(f"failed: {t.user_attrs.get(FAIL_REASON_ATTR, '')[:200]}")
    else:  # crashed: the error is printed above it, with its traceback
        parts.append(f"{kind}: not counted toward n_trials")
    if t.duration is not None:
        parts.append(duration(t.duration.total_seconds()))
    return " | ".join(parts)


def warning_words(warned: list[str]) -> str:
    """`2 warnings: used 7 of 32 minibatches (+1 in trial_output.txt)`: a trial's analysis warnings (where it used
    less than asked, and the like) on its line: how many, and the first, shortened; all are in its output."""
    more = f" (+{len(warned) - 1} in trial_output.txt)" if len(warned) > 1 else ""
    first = warned[0] if len(warned[0]) <= 160 else warned[0][:157] + "..."
    return f"{len(warned)} warning{'s' if len(warned) > 1 else ''}: {first}{more}"


def time_left_line(outcomes: pd.DataFrame, left: int) -> str | None:
    """`3 left: about 34 s (11 s per trial over 2, 1 worker)`: the trials left x the mean wall time of the trials
    that ended as an answer (finished, failed, pruned; not crashed) / the workers (this one and one per trial
    running elsewhere). None when nothing is left or no trial ended yet."""
    done = outcomes[outcomes["kind"].isin(["finished", "failed", "pruned"]) & outcomes["seconds"].notna()]
    if left <= 0 or done.empty:
        return None
    workers = 1 + int((outcomes["kind"] == "running").sum())
    mean = float(done["seconds"].mean())
    return (
        f"{left} left: about {duration(left * mean / workers)} "
        f"({duration(mean)} per trial over {len(done)}, {workers} worker{'s' if workers > 1 else ''})"
    )


class ProgressFilter(io.TextIOBase):
    """A text stream for standard error inside a trial: every line goes to `keep` (the trial's output), and every
    line but the periodic progress ones (`PROGRESS`: `tc train: 256/5700 steps (4%), ...`, what
    `tc.core.progress.Periodic` writes where standard error is no terminal) also goes `through` (the console):
    warnings and errors are still seen, training progress is not."""

    # `tc train: ...`, `tc analyze: ...` and `tc analyze: anisotropy: ...` (a label with a part after the job's)
    PROGRESS = re.compile(r"^tc \w+(?:: [\w ]+?)?: \d+/\d+ \w* ?\(\d+%\)")

    def __init__(self, keep: TextIO, through: TextIO):
        self.keep, self.through, self._part = keep, through, ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.keep.write(s)
        *lines, self._part = (self._part + s).split("\n")
        for line in lines:
            if not self.PROGRESS.match(line):
                self.through.write(line + "\n")
        return len(s)

    def flush(self) -> None:
        self.through.flush()

    def close(self) -> None:
        if self._part and not self.PROGRESS.match(self._part):
            self.through.write(self._part)
        self._part = ""
        self.flush()
        super().close()


class TrialLines:
    """Optuna callback: print `trial_line` for each trial this worker ends, with the time left for the study's
    budget `n_trials` (`time_left_line`)."""

    def __init__(self, space: dict, n_trials: int, headline: str, stream: TextIO | None = None):
        self.shown, self.n_trials, self.headline = varying(space), n_trials, headline
        self.stream = stream

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        line = trial_line(trial, self.shown, self.headline)
        if line is None:
            return
        left = time_left_line(trial_outcomes(study), self.n_trials - budget_used(study))
        print(line + (f" | {left}" if left else ""), file=self.stream or sys.stdout, flush=True)


# ---- the closing lines --------------------------------------------------------------------------------------


def _num(x: Any, spec: str = "+.2f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def tau_lines(table: pd.DataFrame, headline: str, top: int, target: str = "test_acc") -> list[str]:
    """The headline's row (marked `*`), always, then the `top` other measures by |τ| against `target`: each τ-b
    with its bootstrap 95% interval, its Holm p (the headline's: its own, tested alone), ρ, Ψ and the trials."""
    sub = table[table["target"] == target] if len(table) else table
    head = sub[sub["measure"] == headline] if len(sub) else sub
    rest = sub[sub["measure"] != headline] if len(sub) else sub
    if len(rest):
        rest = rest.assign(a=rest["kendall"].abs()).sort_values("a", ascending=False).head(top)
    width = max([len(headline), *(len(m) for m in rest["measure"])] if len(rest) else [len(headline)]) + 2
    lines = [f"  {'measure':<{width}}  τ-b     95% CI           p (Holm)  ρ       Ψ       trials"]
    if len(head) == 0:
        lines.append(f"* {headline:<{width}}  not computed (not measured, or constant over these trials)")
    for star, r in [("*", row) for row in head.itertuples()] + [(" ", row) for row in rest.itertuples()]:
        ci = f"[{_num(r.kendall_ci_low)}, {_num(r.kendall_ci_high)}]"
        lines.append(
            f"{star} {r.measure:<{width}}  {_num(r.kendall):<6}  {ci:<15}  {_num(r.kendall_p_holm, '.3g'):<8}  "
            f"{_num(r.spearman):<6}  {_num(r.granulated_kendall):<6}  {r.n_trials}"
        )
    family = int(sub.loc[sub["measure"] != headline, "kendall_p"].notna().sum()) if len(sub) else 0
    lines.append(
        f"  * headline, pre-specified: its p is tested alone at α = {ALPHA:g}; every other p is Holm-adjusted over "
        f"the {family} measures scored against {target}"
    )
    return lines


def closing_lines(summary: Any) -> list[str]:
    """The sweep's closing lines (each after `tc sweep: `, the τ table indented): the trials by how they ended,
    the correlations' status (`tc.sweep.outcomes.CorrelationStatus`), and, when computed, the τ table: the
    headline alone below MIN_INTERPRETABLE_TRIALS, with the top `TOP` others from there on. `summary`: a
    `tc.sweep.summary.SweepSummary`."""
    status = summary.status
    lines = [f"tc sweep: {summary.account.line()}", f"tc sweep: {status.line}"]
    if status.kind != "too_few":
        top = TOP if status.kind == "computed" else 0
        lines += tau_lines(summary.table, summary.headline, top)
    return lines
