"""Agreement of two analyses of the same checkpoints (e.g. on the CPU and on CUDA; scripts/gpu_check.sh).

    python scripts/compare_metrics.py A.json B.json

Each file is what `benchmarks/analyze_phases.py --json` writes: {"device": ..., "cpu": ..., "metrics": {name:
value}, "phases": {name: seconds}}. Prints how many metrics are equal, the largest differences (timers left
out: they are compared as speed-ups below), the metrics only one side has, and each phase's time on both
sides with the speed-up of B over A. Exit status 0; reading the table is the check.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path


def is_timer(name: str) -> bool:
    return name.endswith(("_seconds", "_cost_epochs", "_evals"))


def differences(a: dict[str, float], b: dict[str, float]) -> tuple[int, list[tuple[str, float, float, float]]]:
    """(number of equal metrics, [(name, a, b, |a - b|)] of the others, largest first); NaN equals NaN."""
    equal, rows = 0, []
    for name in sorted(set(a) & set(b)):
        if is_timer(name):
            continue
        x, y = a[name], b[name]
        if x == y or (math.isnan(x) and math.isnan(y)):
            equal += 1
        else:
            rows.append((name, x, y, abs(x - y)))
    return equal, sorted(rows, key=lambda r: -r[3] if not math.isnan(r[3]) else -math.inf)


def main(argv: list[str]) -> int:
    a, b = (json.loads(Path(p).read_text()) for p in argv[:2])
    print(f"A: {a.get('device')} ({a.get('cpu', '')})\nB: {b.get('device')} ({b.get('cpu', '')})")
    equal, rows = differences(a["metrics"], b["metrics"])
    print(f"\n{equal} metrics equal, {len(rows)} differ; the largest differences:")
    print("| metric | A | B | abs diff |\n|---|---|---|---|")
    for name, x, y, d in rows[:25]:
        print(f"| {name} | {x:.6g} | {y:.6g} | {d:.3g} |")
    only = sorted(set(a["metrics"]) ^ set(b["metrics"]))
    if only:
        print(f"\nonly one side has: {', '.join(only)}")
    print("\n| phase | A (s) | B (s) | speed-up B over A |\n|---|---|---|---|")
    for name in a.get("phases", {}):
        if name in b.get("phases", {}):
            x, y = a["phases"][name], b["phases"][name]
            print(f"| {name} | {x:.2f} | {y:.2f} | {x / y if y else math.inf:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
