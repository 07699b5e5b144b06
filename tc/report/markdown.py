"""The report's Markdown pieces: numbers, intervals, and the table of claims. Pure."""

from __future__ import annotations

import math

from tc.stats.replicates import UNBOUNDED, Bounds, Claim, Effect, t_interval


def fmt(x, digits: int = 3) -> str:
    """A number with `digits` decimals; "n/a" for None or NaN (a metric not measured)."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def fmt_p(p) -> str:
    """A p-value with 3 decimals; below 0.001 as "< 0.001" (not "0.000": a p-value is never 0)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def mean_ci(values: dict[int, float], digits: int = 3, bounds: Bounds = UNBOUNDED) -> str:
    """The mean over seeds and its Student-t 95% interval inside the quantity's range `bounds`
    (`tc.stats.replicates.t_interval`): "m [lo, hi]"."""
    mean, lo, hi = t_interval(list(values.values()), bounds=bounds)
    return f"{fmt(mean, digits)} [{fmt(lo, digits)}, {fmt(hi, digits)}]"


def effect_rows(effects: list[Effect], verdicts: dict[int, str] | None = None) -> list[str]:
    """A table of claims: arms' means, the paired difference with its 95% CI over seeds, what the claim
    predicts (`predicted`: side and margin), and the verdict (`verdicts` overrides the verdict of the row at
    that index)."""
    lines = [
        "| claim | difference | a | b | difference [95% CI] | predicted | seeds | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, e in enumerate(effects):
        v = (verdicts or {}).get(i, e.verdict)
        lines.append(
            f"| {e.claim.text} | `{e.claim.label()}` | {fmt(e.mean_a)} | {fmt(e.mean_b)} | "
            f"{fmt(e.diff)} [{fmt(e.low)}, {fmt(e.high)}] | {predicted(e.claim)} | {e.n} | **{v}** |"
        )
    return lines


def predicted(c: Claim) -> str:
    """What the claim predicts of the difference, with its margin: "> 0", "< −0.01", "beyond ±0.01", "≠ 0"."""
    m = f"{c.margin:g}"
    if c.expected == 0:
        return f"beyond ±{m}" if c.margin else "≠ 0"
    return f"> {m}" if c.expected == 1 else f"< −{m}" if c.margin else "< 0"


def margins(claims: tuple[Claim, ...]) -> str:
    """The margins `claims` use, in words."""
    values = sorted({c.margin for c in claims if c.margin})
    return " or ".join(f"{m:g}" for m in values) or "none"


def model_name(model: str) -> str:
    """A model as the text names it: the MLP in capitals, the zoo's other names as they are."""
    return model.upper() if model == "mlp" else model
