"""Whether a dotted path that a text names (`tc.report.files.write`) can be imported: the docs, docstrings and
tests that name tc's modules are checked with it (tests/test_docs.py, tests/test_report.py)."""

from __future__ import annotations

import importlib


def resolves(dotted: str) -> bool:
    """`dotted` names a module of tc, or an attribute of one."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False
