"""Issue 21: the GPU check is ready to run where a GPU is lent (scripts/gpu_check.sh; docs/scaling.md).

No GPU here: these tests check what can be checked without one: the script parses, names only files that exist,
and its agreement table (scripts/compare_metrics.py) reads what `benchmarks/analyze_phases.py --json` writes."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(ROOT / "scripts"))

import compare_metrics  # noqa: E402  (a script, imported from its folder)


def test_the_script_parses_and_names_files_that_exist():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    named = set(re.findall(r"(?:benchmarks|scripts)/\w+\.(?:py|sh)", SCRIPT.read_text()))
    assert {"benchmarks/analyze_phases.py", "scripts/compare_metrics.py", "benchmarks/quickstart_time.py"} <= named
    assert all((ROOT / p).is_file() for p in named), named
    assert "--json" in SCRIPT.read_text()


def test_differences_count_equal_metrics_and_rank_the_others_leaving_timers_out():
    a = {"tc_test": 0.9, "tc_full_test": 0.8, "drift_test": 0.15, "nan_metric": math.nan, "tc_test_seconds": 3.0}
    b = {"tc_test": 0.9, "tc_full_test": 0.802, "drift_test": 0.1500001, "nan_metric": math.nan, "tc_test_seconds": 0.1}
    equal, rows = compare_metrics.differences(a, b)
    assert equal == 2  # tc_test and the NaN pair; the timer is no metric to agree on
    assert [r[0] for r in rows] == ["tc_full_test", "drift_test"]
    assert math.isclose(rows[0][3], 0.002)


def test_the_table_reads_what_analyze_phases_writes(tmp_path, capsys):
    doc = {"device": "cpu", "cpu": "x", "metrics": {"tc_test": 0.9, "a_seconds": 2.0}, "phases": {"tc_test": 2.0}}
    other = {**doc, "device": "cuda", "metrics": {"tc_test": 0.9, "a_seconds": 0.5}, "phases": {"tc_test": 0.5}}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for p, d in zip(paths, (doc, other), strict=True):
        p.write_text(json.dumps(d))
    assert compare_metrics.main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert "1 metrics equal, 0 differ" in out and "| tc_test | 2.00 | 0.50 | 4.0x |" in out


def test_the_step_timeouts_fit_one_device_call():
    # the device tool runs one command for at most 600 s: the analysis runs on both devices and the quick start
    text = SCRIPT.read_text()
    analyze, quick = (
        int(re.search(rf"timeout (\d+) \$PY benchmarks/{name}", text)[1])
        for name in ("analyze_phases", "quickstart_time")
    )
    assert 2 * analyze + quick <= 560
