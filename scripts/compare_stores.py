"""Compare every run of two MLflow stores: metrics over their whole history, params, tags and artifacts.

A refactor that changes no behaviour leaves the same runs with the same numbers. Run the same commands twice,
each into its own store (before and after), then

    python scripts/compare_stores.py sqlite:///before/mlflow.db sqlite:///after/mlflow.db

Runs are matched by role, not id: the chain of run names from the top-level run down, numbered in start order
where names repeat. Run ids inside values (tags, params, file contents and names) are replaced by their role
first, so only real differences remain. What differs by nature (wall-clock times: any metric, column or key
whose name contains one of VOLATILE) is counted apart and not called a difference. A run's
status is compared. Exit status 1 when anything else differs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

VOLATILE = ("seconds", "_time", "duration", "cost_epochs", "heartbeat", "eta", "elapsed", "timestamp", "generated")
SKIP_TAGS = ("mlflow.source.", "mlflow.user", "mlflow.gitRepoURL", "mlflow.project.", "tc.writer", "tc.worker")


def volatile(name: str) -> bool:
    return any(v in name.lower() for v in VOLATILE)


@dataclass
class Store:
    client: MlflowClient
    roles: dict[str, str] = field(default_factory=dict)  # run id -> role

    def subst(self, text: str) -> str:
        for run_id, role in self.roles.items():
            text = text.replace(run_id, f"<{role}>")
        return text


def open_store(uri: str) -> Store:
    client = MlflowClient(tracking_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id], max_results=50000)]
    runs.sort(key=lambda r: r.info.start_time)
    by_id = {r.info.run_id: r for r in runs}
    store, seen = Store(client), Counter()

    def role(run) -> str:
        if run.info.run_id in store.roles:
            return store.roles[run.info.run_id]
        parent = run.data.tags.get("mlflow.parentRunId")
        prefix = role(by_id[parent]) + " / " if parent in by_id else ""
        name = prefix + (run.info.run_name or "?")
        seen[name] += 1
        store.roles[run.info.run_id] = name if seen[name] == 1 else f"{name} #{seen[name]}"
        return store.roles[run.info.run_id]

    for run in runs:
        role(run)
    return store


def _history(store: Store, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in store.client.get_metric_history(run_id, key))


def same_history(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    """Equal steps and values; NaN equals NaN (a metric that is NaN in both is unchanged)."""
    return len(a) == len(b) and all(
        sa == sb and (va == vb or (math.isnan(va) and math.isnan(vb))) for (sa, va), (sb, vb) in zip(a, b, strict=True)
    )


def _files(store: Store, run_id: str, root: Path) -> dict[str, bytes]:
    local = Path(store.client.download_artifacts(run_id, "", str(root)))
    return {store.subst(str(p.relative_to(local))): p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file()}


def _table_diff(a: bytes, b: bytes, suffix: str) -> str | None:
    """None when two tables agree on every non-volatile column (numbers exactly); else what differs."""
    read = pd.read_csv if suffix == ".csv" else pd.read_json
    ta, tb = read(io.BytesIO(a)), read(io.BytesIO(b))
    if list(ta.columns) != list(tb.columns) or len(ta) != len(tb):
        return f"shape {ta.shape} -> {tb.shape}, columns {list(ta.columns)} -> {list(tb.columns)}"
    cols = [c for c in ta.columns if not volatile(str(c))]
    bad = [c for c in cols if not ta[c].equals(tb[c])]
    return f"columns differ: {bad}" if bad else None


def _json_diff(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only {'before' if k in a else 'after'}" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            if not volatile(str(k)):
                out += _json_diff(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _json_diff(x, y, f"{path}/{i}")]
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return [] if a == b or both_nan else [f"{path}: {str(a)[:80]} -> {str(b)[:80]}"]


def compare(before: Store, after: Store) -> dict[str, list[str]]:
    """Per role: the list of differences (empty when identical). Also counts what was compared."""
    report: dict[str, list[str]] = {}
    b_roles = {v: k for k, v in before.roles.items()}
    a_roles = {v: k for k, v in after.roles.items()}
    for role in sorted(set(b_roles) | set(a_roles)):
        if role not in b_roles or role not in a_roles:
            report[role] = [f"run only {'before' if role in b_roles else 'after'}"]
            continue
        rb, ra = before.client.get_run(b_roles[role]), after.client.get_run(a_roles[role])
        diffs, counts = [], Counter()
        if rb.info.status != ra.info.status:  # how a run ended is behaviour (a failed, a pruned trial)
            diffs.append(f"status: {rb.info.status!r} -> {ra.info.status!r}")
        for key in sorted(set(rb.data.metrics) | set(ra.data.metrics)):
            if key not in rb.data.metrics or key not in ra.data.metrics:
                diffs.append(f"metric {key}: only {'before' if key in rb.data.metrics else 'after'}")
            elif volatile(key):
                counts["volatile metrics"] += 1
            elif not same_history(_history(before, rb.info.run_id, key), _history(after, ra.info.run_id, key)):
                diffs.append(f"metric {key}: {rb.data.metrics[key]!r} -> {ra.data.metrics[key]!r} (history differs)")
            else:
                counts["identical metric histories"] += 1
        for kind, xb, xa in (("param", rb.data.params, ra.data.params), ("tag", rb.data.tags, ra.data.tags)):
            keys = {k for k in set(xb) | set(xa) if not k.startswith(SKIP_TAGS) and not volatile(k)}
            for key in sorted(keys):
                vb, va = before.subst(xb.get(key, "<absent>")), after.subst(xa.get(key, "<absent>"))
                if vb == va:  # descriptions (mlflow.note.content) too: they hold metrics, never times
                    counts[f"identical {kind}s"] += 1
                    continue
                diffs.append(f"{kind} {key}: {vb[:80]!r} -> {va[:80]!r}")
        with tempfile.TemporaryDirectory() as tmp:
            fb = _files(before, rb.info.run_id, Path(tmp, "b"))
            fa = _files(after, ra.info.run_id, Path(tmp, "a"))
        for name in sorted(set(fb) | set(fa)):
            if name not in fb or name not in fa:
                diffs.append(f"file {name}: only {'before' if name in fb else 'after'}")
                continue
            b, a = before.subst(fb[name].decode("latin-1")), after.subst(fa[name].decode("latin-1"))
            suffix = Path(name).suffix
            if b == a:
                counts["identical files"] += 1
            elif suffix == ".csv":
                why = _table_diff(b.encode("latin-1"), a.encode("latin-1"), suffix)
                counts["tables equal but for volatile columns"] += why is None
                diffs += [f"file {name}: {why}"] if why else []
            elif suffix == ".json":
                found = _json_diff(json.loads(b), json.loads(a))
                counts["json equal but for volatile keys"] += not found
                diffs += [f"file {name}: {d}" for d in found]
            else:
                digest = (hashlib.sha256(fb[name]).hexdigest()[:8], hashlib.sha256(fa[name]).hexdigest()[:8])
                diffs.append(f"file {name}: bytes differ {digest[0]} -> {digest[1]}")
        report[role] = diffs + [f"({n} {what})" for what, n in sorted(counts.items())]
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("before")
    p.add_argument("after")
    args = p.parse_args(argv)
    report = compare(open_store(args.before), open_store(args.after))
    differs = False
    for role, lines in report.items():
        real = [line for line in lines if not line.startswith("(")]
        differs |= bool(real)
        print(f"## {role}: {'DIFFERS' if real else 'same'}")
        for line in lines:
            print(f"- {line}")
    return int(differs)


if __name__ == "__main__":
    sys.exit(main())
