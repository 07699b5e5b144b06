"""The quick start's wall time, phase by phase, and its printed numbers against the README's.

    python benchmarks/quickstart_time.py                  # the README's main job, in a fresh temporary store
    python benchmarks/quickstart_time.py -P epochs=1      # any main-job parameter, passed on

It runs the README's command (`mlflow run . --env-manager local --experiment-name tc`) in a fresh temporary
sqlite store, as a user would after set-up (set-up excluded), and prints:
- the wall time of the command, and the load average before and after (a shared machine is slower);
- where it went: the training run's `train_seconds`, and every `<phase>_seconds` metric the analysis logged
  on it (`tc.analysis.registry` names them), so the rest (start-up, loading, write-back) shows as the difference;
- the headline block it printed, metric by metric against the README's `quickstart-output` block: the
  numbers may change only where a documented fix changed them.
Not a timed test: the README records what it measured, with the date and the CPU (`docs/benchmarks.md`).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADLINE_LINE = re.compile(r"^  (\w+)\s+(-?[\d.]+|nan)$")


def headline(text: str) -> dict[str, float]:
    """{metric: value} of the block after '=== tc quick start ===' in `text` (the main job's output)."""
    _, _, block = text.partition("=== tc quick start ===")
    return {m.group(1): float(m.group(2)) for line in block.splitlines() if (m := HEADLINE_LINE.match(line))}


def readme_headline() -> dict[str, float]:
    """The headline block recorded in README.md's quickstart-output section."""
    text = (ROOT / "README.md").read_text()
    start, end = text.index("<!-- quickstart-output -->"), text.index("<!-- /quickstart-output -->")
    return headline(text[start:end])


def compare(printed: dict[str, float], recorded: dict[str, float]) -> list[str]:
    """One line per metric in either block: both values and their difference (or which block lacks it)."""
    lines = []
    for k in dict.fromkeys([*recorded, *printed]):
        a, b = recorded.get(k), printed.get(k)
        if a is None or b is None:
            lines.append(f"  {k:29s} README {a!s:>8}  now {b!s:>8}  (only in {'now' if a is None else 'README'})")
        else:
            lines.append(f"  {k:29s} README {a:8.4f}  now {b:8.4f}  diff {b - a:+.4f}")
    return lines


def phase_table(metrics: dict[str, float], wall: float) -> list[str]:
    """Markdown rows: training, then every analysis phase timer, then what the timers do not cover."""
    train = metrics.get("train_seconds", float("nan"))
    rows = [("train (train_seconds)", train)]
    # the sums the phases add up to, then the phases themselves (registry names; a sum is not a phase)
    sums = ("analysis_seconds", "anisotropy_seconds")
    rows += [(k, metrics[k]) for k in sums if k in metrics]
    rows += sorted((k, v) for k, v in metrics.items() if k.endswith("_seconds") and k not in (*sums, "train_seconds"))
    timed = train + sum(metrics.get(k, 0.0) for k in sums) + metrics.get("tc_mmd_seconds", 0.0)
    timed += sum(v for k, v in metrics.items() if k.startswith("gm_") and k.endswith("_seconds"))
    out = ["| part | seconds |", "|---|---|"] + [f"| {k} | {v:.1f} |" for k, v in rows]
    out.append(f"| not in a timer (start-up, data, loading, write-back) | {wall - timed:.1f} |")
    out.append(f"| **wall** | **{wall:.1f}** |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-P", dest="params", action="append", default=[], help="a main-job parameter name=value")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tc.core.device import cpu_description  # after the path: this checkout's tc

    print(f"CPU: {cpu_description()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}; load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="tc-quickstart-") as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "PYTHONPATH": str(ROOT)}
        cmd = ["mlflow", "run", str(ROOT), "--env-manager", "local", "--experiment-name", "tc"]
        for kv in args.params:
            cmd += ["-P", kv]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        print(f"load average after: {os.getloadavg()}")
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            print(f"the main job failed (exit {proc.returncode}) after {wall:.1f} s")
            return 1
        warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if "warn" in line.lower()]
        import mlflow  # only here: the store of the run above

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        printed = headline(proc.stdout)
        run_id = re.search(r"training run: (\w+)", proc.stdout).group(1)
        metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    print(f"\nquick start: {wall:.1f} s wall ({' '.join(cmd[1:])}), set-up excluded")
    print("\n".join(phase_table(metrics, wall)))
    print(f"\nwarning lines in its output: {len(warnings)}", *warnings[:5], sep="\n")
    print("\nheadline against README.md's quickstart-output block:")
    print("\n".join(compare(printed, readme_headline())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
