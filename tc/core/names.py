"""Names read from a run: the one place that says which strings tc accepts as run ids, checkpoint file names
and analysis numbers (versions, steps) before any of them becomes a path. A run's artifacts and tags are data
from whoever logged the run, so each rule is a whitelist of ASCII characters (`int()` also reads "٣", and
`"²".isdigit()` is True)."""

from __future__ import annotations

import re

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,255}")  # MLflow's rule for run ids: one plain path component
CHECKPOINT_FILE = re.compile(r"step_[0-9]{8,}\.pt")  # what `tc.core.checkpoints.filename` makes of a step
NUMBER = re.compile(r"[0-9]{1,18}")  # `tc.analysis_version` (and `analysis/v<N>`), `tc.analysis_step`
MAX_NUMBER = 10**18 - 1  # the largest NUMBER: a writer of numbers (log_analysis's max + 1) stops here


def is_run_id(name: object) -> bool:
    return isinstance(name, str) and RUN_ID.fullmatch(name) is not None


def is_checkpoint_file(name: object) -> bool:
    return isinstance(name, str) and CHECKPOINT_FILE.fullmatch(name) is not None


def is_number(raw: object) -> bool:
    return isinstance(raw, str) and NUMBER.fullmatch(raw) is not None
