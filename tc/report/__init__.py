"""The report (docs/REPORT.md): its seeded experiments and their claims, the sweep's verdict, and its text.
The top layer of tc: it may import every layer below (config, core, stats, analysis, tracking, sweep), and
nothing in tc imports it. `entrypoints/report.py` parses the command line and calls `produce.produce` (run
the report) or `files.write_rerendered` (re-render it from its stored tables).

Its modules, lowest first:
- `environments`: the sweep environments (a data set, a model family, a search space), each swept on its own.
- `experiments`: the design: `Settings` (the report's scale and environments), the training runs and analyses it
  makes, the claims each section tests, each environment's sweep parameters, the machine. Pure.
- `verdicts`: every claim's seed-level `Effect` and verdict (from `tc.stats.replicates`), the effects table,
  the sweep's confirmatory verdict, the comparison with the best baseline, and SPEC's bar. Pure.
- `costs`: what each measure costs per trial in total compute, relative to one training run of the trial, and the
  paper-scale estimate. Pure.
- `results`: `Results` and one `SweepResult` per environment, what the text is made from; the stored tables' names.
- `robustness`: the verdicts across environments: robust table (worst environment), the primary test, per-cut τ,
  the error estimates' calibration beside GDE. Pure.
- `markdown`: numbers, intervals and the claims table as Markdown. Pure.
- `sections`: the header and sections 1 to 5 and the compute section, one function each. Pure.
- `sweep_section`: section 6, each environment's design, correlation table and figures. Pure.
- `robust_section`: section 6 across environments: robust table, per-cut τ, calibration, the verdict. Pure.
- `render`: the whole text (`render`), and the re-rendering of a stored text's derived parts (`rerender`). Pure.
- `files`: REPORT.md and its tables written, read back and re-rendered in place; the sweep's artifacts. The
  only module here that reads or writes files.
- `produce`: the report run: every experiment trained and analyzed as nested MLflow runs, one sweep per
  environment run until enough trials converged, then `files.write`. MLflow through `tc.tracking` only.

Three names stay importable from the package itself, because published text names them by the path they had
when the report was one module: `tc.report.rerender` (the note each re-render writes, docs/REPORT.md),
`tc.report.settings` (docs/report/settings.json's notes) and `tc.report.write` (issues 9, 10 and 14).
"""

from tc.report.experiments import settings
from tc.report.files import write
from tc.report.render import rerender

__all__ = ["rerender", "settings", "write"]
