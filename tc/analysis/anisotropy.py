"""SPEC section 5 on a run's checkpoints: feature-drift and gradient-noise anisotropy and the perturbation
test at every cut, as tables and `aniso_*` metrics (no MLflow here)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from tc.analysis.inputs import RunContext
from tc.analysis.registry import add_means_over_cuts
from tc.analysis.splits import EvalSplit, parse_cuts
from tc.config import AnalyzeConfig
from tc.config.analyze import min_spectrum_units
from tc.core import anisotropy as A
from tc.core import consistency as C
from tc.core import sgd_noise as noise
from tc.core.checkpoints import Checkpoints
from tc.core.data import DataBundle, iterate_batches
from tc.core.device import resolve_device
from tc.stats.multiplicity import holm
from tc.stats.replicates import bounded_interval


@dataclass
class AnisotropyResult:
    stats: pd.DataFrame  # cut, kind (drift|grad), statistic, value, n, p, unit
    spectra: pd.DataFrame  # cut, kind, index, eig, null_q05, null_q95
    perturb: pd.DataFrame  # cut, eps, kind (clean|top|random|bottom), draw, acc
    metrics: dict[str, float]  # the counts used among them: n_grad_batches, n_drift_pairs_d<cut>, n_cuts_<test>
    warnings: list[str] = field(default_factory=list)  # where a test used less than asked, or was not run


PERTURB_HEADLINE_EPS = 0.5
PERTURB_MEANS = ("perturb_clean_acc", "perturb_top_acc", "perturb_random_acc", "perturb_bottom_acc")


def perturb_options(cfg: AnalyzeConfig) -> noise.PerturbOptions:
    """The perturbation test's design for an analysis: k = `aniso_k`, the analysis seed, and the other
    options' defaults (one place, so that docs/REPORT.md states the draws the analysis used)."""
    return noise.PerturbOptions(k=cfg.aniso_k, seed=cfg.seed)


def min_holm(pvalues: list[float]) -> float:
    """min_c p_c^Holm: the smallest Holm-adjusted p-value over the cuts, a test of "anisotropic at some cut"
    with the family-wise error controlled (a mean of p-values is not a p-value)."""
    return float(holm(pvalues).min())


def grad_batches(data: DataBundle, cfg: AnalyzeConfig, run: RunContext) -> tuple[list, list[str]]:
    """(the minibatches of the gradient noise, warnings): the first `cfg.grad_batches` full minibatches of the
    run's epoch-0 shuffle, normalized. A training set that holds fewer gives them all, and a warning says so;
    with fewer than `min_spectrum_units(aniso_k)` the test would mean nothing: the warning says it is not run
    (the caller runs it only from that many on)."""
    bs, asked = run.train_batch_size, cfg.grad_batches
    batches = []
    for xb, yb in iterate_batches(data, bs, run.train_seed, epoch=0, augment=False):
        if len(batches) == asked or len(yb) < bs:
            break
        batches.append((data.normalize(xb), yb))
    n, need = len(batches), min_spectrum_units(cfg.aniso_k)
    held = f"the training set ({len(data.train_y)} examples) holds {n} full minibatch(es) of {bs}"
    if n < need:
        why = f"{n} centred minibatches span at most {max(n - 1, 0)} directions"
        return batches, [f"gradient-noise test not run: {held}, and it needs at least aniso_k + 2 = {need} ({why})"]
    if n < asked:
        return batches, [f"gradient noise uses {n} minibatches, not grad_batches={asked}: {held}"]
    return batches, []


def anisotropy(
    ckpts: Checkpoints,
    data: DataBundle,
    cfg: AnalyzeConfig,
    run: RunContext,
    split: EvalSplit,
    progress: Callable[[int], None] | None = None,
) -> AnisotropyResult:
    """SPEC section 5 at every cut: feature drift over the window and the final checkpoint (split `split`;
    `tc.core.anisotropy.drift_test`, sampling unit: samples, as pairs), gradient noise at the window's first
    checkpoint (sampling unit: minibatches), and the perturbation test on the final checkpoint.

    Metrics: per cut `aniso_{drift,grad}_{topk_var,eff_rank,pvalue,lw_pvalue}_d<cut>`; across cuts the mean of
    topk_var and eff_rank (descriptive) and `aniso_{drift,grad}_min_pvalue` / `_lw_min_pvalue`: the smallest
    Holm-adjusted p-value over the cuts ("anisotropic at some cut", family-wise error controlled). Perturbation
    at ε = 0.5: `aniso_perturb_{clean,top,random,bottom}_acc_d<cut>`, the last three with `_lo`/`_hi` (95% t
    interval over draws), and their means over cuts. A test with fewer units than `min_spectrum_units(aniso_k)`
    (aniso_k + 2 pairs of samples with distinct drift at a cut; aniso_k + 2 full training minibatches) is not
    run there, and a cut whose features do not drift gets no perturbation test: the result's `warnings` say so,
    and the counts used are metrics (`n_grad_batches`, `n_drift_pairs_d<cut>`, `n_cuts_{drift,grad,perturb}`).
    `progress(1)` is called after the gradient noise and after each cut (len(cuts) + 1 calls): the phase takes
    minutes on a CPU.

    Phase timers (seconds): `aniso_grad_seconds` (the minibatches and their gradient noise),
    `aniso_features_seconds` (the shallow features at every cut), `aniso_stats_seconds` (the drift and
    gradient-noise spectrum tests with their null draws) and `aniso_perturb_seconds` (the perturbation test:
    its principal directions and its forward passes)."""
    tick = progress or (lambda n: None)
    t0 = time.perf_counter()
    model = run.model
    device = resolve_device(cfg.device)  # models and forward passes; the statistics run on the CPU (numpy)
    cuts = parse_cuts(cfg.cut_spec, model)
    win = C.window(ckpts.steps, cfg.window)
    chosen = [ckpts.state_dicts[i] for i in win] + [ckpts.state_dicts[-1]]
    x = data.normalize(split.x)
    grad_ckpt = win[0]
    batches, warnings = grad_batches(data, cfg, run)
    need, grads = min_spectrum_units(cfg.aniso_k), {}
    if len(batches) >= need:  # fewer: no test (`grad_batches` has said why), and no gradients to compute
        grads = noise.gradient_noise(model, ckpts.state_dicts[grad_ckpt], batches, cuts, seed=cfg.seed, device=device)
    seconds = {"grad": time.perf_counter() - t0, "features": 0.0, "stats": 0.0, "perturb": 0.0}
    tick(1)
    t0 = time.perf_counter()
    # one shallow pass per checkpoint to the deepest cut keeps every cut's features (not one pass per cut)
    all_feats = noise.features_at_cuts(model, chosen, x, cuts, cfg.batch_size, device)
    seconds["features"] = time.perf_counter() - t0
    stat_rows, spec_rows, pert_frames = [], [], []
    metrics: dict[str, float] = {"n_grad_batches": float(len(batches))}
    ran: dict[str, list[int]] = {"drift": [], "grad": [], "perturb": []}  # the cuts at which each test ran
    pvalues: dict[tuple[str, str], dict[int, float]] = {}
    for cut in cuts:
        t0 = time.perf_counter()
        feats = all_feats.pop(cut)  # released after its cut: peak memory falls as the loop goes on
        reports = {}
        drift = noise.drift_vectors(feats)
        pairs = len(A.drift_units(drift, cfg.seed))  # pairs of samples whose drift differs
        metrics[f"n_drift_pairs_d{cut}"] = float(pairs)
        if pairs >= need:
            reports["drift"] = A.drift_test(drift, k=cfg.aniso_k, draws=cfg.null_draws, seed=cfg.seed)
        else:
            warnings.append(
                f"drift test not run at cut {cut}: {pairs} pair(s) of {split.name} samples with distinct drift "
                f"({len(split.y)} samples), and it needs at least aniso_k + 2 = {need} (raise max_samples)"
            )
        if cut in grads:
            reports["grad"] = A.analyze_samples(
                grads[cut], k=cfg.aniso_k, draws=cfg.null_draws, seed=cfg.seed, unit="minibatches"
            )
        for kind, r in reports.items():
            ran[kind].append(cut)
            values = {
                "topk_var": r.topk[r.k - 1],
                "eff_rank": r.eff_rank,
                "max_over_mean": r.max_over_mean,
                "pvalue": r.pvalue,
                "lw_pvalue": r.lw_pvalue,
                "spikes": r.spikes,
                "mp_spikes": r.mp_spikes,
                "power_law_alpha": r.power_law_alpha,
                **{f"top{j + 1}_var": v for j, v in enumerate(r.topk)},
            }
            stat_rows += [(cut, kind, name, float(v), r.n, r.p, r.unit) for name, v in values.items()]
            for name in ("topk_var", "eff_rank", "pvalue", "lw_pvalue"):
                metrics[f"aniso_{kind}_{name}_d{cut}"] = float(values[name])
            for name in ("pvalue", "lw_pvalue"):
                pvalues.setdefault((kind, name), {})[cut] = float(values[name])
            spec_rows += [(cut, kind, i + 1, r.eig[i], r.null_q05[i], r.null_q95[i]) for i in range(len(r.eig))]
        t1 = time.perf_counter()
        seconds["stats"] += t1 - t0
        full = feats[1:] - feats[:-1]
        if not bool(full.any()):  # identical checkpoints: no drift directions to perturb along
            warnings.append(f"perturbation test not run at cut {cut}: its features do not change over the window")
            tick(1)
            continue
        ran["perturb"].append(cut)
        opts = perturb_options(cfg)
        pert = noise.perturbation_test(
            model, ckpts.state_dicts[-1], feats[-1], full, (split.y, cut), opts, device, batch_size=cfg.batch_size
        )
        seconds["perturb"] += time.perf_counter() - t1
        pert_frames.append(pert.assign(cut=cut)[["cut", "eps", "kind", "draw", "acc"]])
        summary = perturbation_summary(pert)
        for row in summary.itertuples():
            if row.kind == "clean":
                metrics[f"aniso_perturb_clean_acc_d{cut}"] = row.acc
            elif row.eps == PERTURB_HEADLINE_EPS:
                for suffix, v in (("", row.acc), ("_lo", row.lo), ("_hi", row.hi)):
                    metrics[f"aniso_perturb_{row.kind}_acc{suffix}_d{cut}"] = float(v)
        tick(1)
    # descriptive means over the cuts where the statistic exists (a cut may lack units, or drift)
    means = ("drift_topk_var", "drift_eff_rank", "grad_topk_var", "grad_eff_rank", *PERTURB_MEANS)
    add_means_over_cuts(metrics, [f"aniso_{name}" for name in means], cuts)
    for (kind, name), per_cut in pvalues.items():
        prefix = "" if name == "pvalue" else "lw_"
        metrics[f"aniso_{kind}_{prefix}min_pvalue"] = min_holm(list(per_cut.values()))
    metrics.update({f"n_cuts_{test}": float(len(at)) for test, at in ran.items()})
    metrics.update({f"aniso_{phase}_seconds": s for phase, s in seconds.items()})
    return AnisotropyResult(
        stats=pd.DataFrame(stat_rows, columns=["cut", "kind", "statistic", "value", "n", "p", "unit"]),
        spectra=pd.DataFrame(spec_rows, columns=["cut", "kind", "index", "eig", "null_q05", "null_q95"]),
        perturb=pd.concat(pert_frames, ignore_index=True)
        if pert_frames
        else pd.DataFrame(columns=["cut", "eps", "kind", "draw", "acc"]),
        metrics=metrics,
        warnings=warnings,
    )


def perturbation_summary(perturb: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Mean accuracy per (eps, kind) [and cut, if present] over draws, with its interval over draws (lo, hi; NaN
    with one draw). Sampling unit: the draw (its random subspace and its noise). The interval is a t interval on
    the logit scale, kept inside [0, 1] (`tc.stats.replicates.bounded_interval`; a plain t interval clipped when
    a draw's accuracy is exactly 0 or 1; issue 22: a plain t interval over draws left [0, 1]). Clean rows pass
    through with lo = hi = acc. Moved here from `tc.core.sgd_noise`, which cannot use `tc.stats`."""
    keys = [c for c in ("cut", "eps", "kind") if c in perturb]
    rows = []
    for key, group in perturb.groupby(keys, sort=False):
        values = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        acc = group["acc"].to_numpy(dtype=float)
        if values["kind"] == "clean":
            lo = hi = mean = float(acc.mean())
        else:
            mean, lo, hi, _ = bounded_interval(acc, (0.0, 1.0), level)
        rows.append({**values, "acc": mean, "lo": lo, "hi": hi, "draws": len(acc)})
    return pd.DataFrame(rows, columns=[*keys, "acc", "lo", "hi", "draws"])
