"""The import contract of docs/architecture.md: tc's layers, lowest first, and what each may import.

The layer table is read from docs/architecture.md itself, so the page and this test cannot disagree: a module
moved, added or renamed without the page changing fails here. Every import counts, also one inside a function
or under `if TYPE_CHECKING:` (a lazy import is still a dependency a reader has to know about).

- No module imports from a higher layer (a layer may import its own and every lower one), nor through the public
  API (`import tc`, `from tc import train_job`: tc/__init__.py reaches every layer); every module is in a layer.
- config, core, stats and analysis import no mlflow, optuna or matplotlib.pyplot: figures are built as
  `matplotlib.figure.Figure()` objects, never by switching matplotlib's global backend.
- Only tc/tracking and the entry points import mlflow; only tc/sweep imports optuna.
- Each module holds one concept: at most MAX_LINES lines (the issue's "about 350", with a margin), an entry
  point at most MAX_ENTRYPOINT_LINES.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

ARCHITECTURE = ROOT / "docs" / "architecture.md"
PURE = ("mlflow", "optuna", "matplotlib.pyplot", "pylab")
ONLY = {"mlflow": ("tracking", "entrypoints"), "optuna": ("sweep",)}
MAX_LINES = 400
MAX_ENTRYPOINT_LINES = 150
TABLE_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*`(tc/[a-z_]+/|entrypoints/)`\s*\|(.*)\|\s*$")


@dataclass(frozen=True)
class Layer:
    rank: int
    name: str  # the folder's last part: config, core, ..., entrypoints
    pure: bool  # may not import mlflow, optuna or pyplot


def layers(text: str) -> dict[str, Layer]:
    """The layer table of docs/architecture.md: `| rank | `folder` | pure? | ... |` rows, lowest rank first."""
    found = {}
    for line in text.splitlines():
        m = TABLE_ROW.match(line)
        if m:
            name = m.group(2).rstrip("/").split("/")[-1]
            pure = m.group(3).split("|")[0].strip().lower() == "yes"
            found[name] = Layer(int(m.group(1)), name, pure)
    return found


def layer_of(path: Path, root: Path) -> str | None:
    """`tc/core/data.py` -> core; `entrypoints/train.py` -> entrypoints; `tc/__init__.py` -> None (the API)."""
    rel = path.relative_to(root).parts
    if rel[0] == "entrypoints":
        return "entrypoints"
    return rel[1] if len(rel) > 2 else None


def _imports(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import anywhere in the module; `from tc.core import data` gives both
    `tc.core` and `tc.core.data` (the second may be a module), relative imports resolved against `module`."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: -node.level]
                base = ".".join([*parts, base] if base else parts)
            if base != "tc":  # `from tc import x` is all in `tc.x`: a layer, or a name of the public API
                out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _tc_layer(name: str, table: dict[str, Layer]) -> str | None:
    """The layer an imported name lives in; "api" for `tc` itself and the names tc/__init__.py re-exports
    (`import tc`, `from tc import train_job`): they reach every layer, so no layer may import them."""
    parts = name.split(".")
    if parts[0] != "tc":
        return None
    if len(parts) < 2 or parts[1] not in table:
        return "api"
    return parts[1]


def violations(root: Path, table: dict[str, Layer]) -> list[str]:
    """Every broken rule under root/tc and root/entrypoints, as `path:line: what`."""
    found = []
    for path in sorted([*(root / "tc").rglob("*.py"), *(root / "entrypoints").glob("*.py")]):
        rel = path.relative_to(root)
        mine = layer_of(path, root)
        if mine is None:
            if rel != Path("tc/__init__.py"):  # the public API re-exports from every layer, lazily
                found.append(f"{rel}: a module in no layer of docs/architecture.md")
            continue
        if mine not in table:
            found.append(f"{rel}: folder {mine!r} is not a layer of docs/architecture.md")
            continue
        module = ".".join(rel.with_suffix("").parts)
        for line, name in _imports(ast.parse(path.read_text()), module):
            target = _tc_layer(name, table)
            if target == "api":
                found.append(f"{rel}:{line}: {mine} imports the public API ({name}); import from the layer itself")
            elif target is not None and table[target].rank > table[mine].rank:
                found.append(f"{rel}:{line}: {mine} imports upward from {target} ({name})")
            for lib in PURE:
                if name == lib or name.startswith(lib + "."):
                    if table[mine].pure:
                        found.append(f"{rel}:{line}: {mine} is pure but imports {name}")
                    owners = ONLY.get(lib.split(".")[0])
                    if owners is not None and mine not in owners:
                        found.append(f"{rel}:{line}: only {', '.join(owners)} may import {lib}, not {mine}")
    return sorted(set(found))


def test_architecture_page_lists_the_layers_in_order():
    table = layers(ARCHITECTURE.read_text())
    names = [layer.name for layer in sorted(table.values(), key=lambda layer: layer.rank)]
    assert names == ["config", "core", "stats", "analysis", "tracking", "sweep", "report", "entrypoints"]
    assert [layer.name for layer in table.values() if layer.pure] == ["config", "core", "stats", "analysis"]
    on_disk = {p.name for p in (ROOT / "tc").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert on_disk == set(names) - {"entrypoints"}


def test_no_module_breaks_the_import_contract():
    assert violations(ROOT, layers(ARCHITECTURE.read_text())) == []


def test_architecture_page_names_every_module():
    """The page says where each concept lives: every module of tc appears there by its path."""
    text = ARCHITECTURE.read_text()
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "tc").rglob("*.py"))
        if p.name != "__init__.py" and str(p.relative_to(ROOT)) not in text
    ]
    assert missing == []


def test_modules_hold_one_concept_each():
    big = {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / "tc").rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    big |= {
        str(p.relative_to(ROOT)): n
        for p in sorted((ROOT / "entrypoints").glob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_ENTRYPOINT_LINES
    }
    assert big == {}


# The checker itself, on a small tree with one of each violation: a contract test that finds nothing is only
# worth something if it would find them.
TABLE = """
| rank | folder | pure | holds |
|---|---|---|---|
| 0 | `tc/config/` | yes | configs |
| 1 | `tc/core/` | yes | numbers |
| 4 | `tc/tracking/` | no | mlflow |
| 5 | `tc/sweep/` | no | optuna |
| 8 | `entrypoints/` | no | commands |
"""

BAD = {
    "tc/core/up.py": "from tc.tracking import client\n",  # upward, at module level
    "tc/core/lazy.py": "def f():\n    from tc.sweep.study import x\n",  # upward, inside a function
    "tc/core/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tc.tracking.client\n",
    "tc/core/plot.py": "import matplotlib.pyplot as plt\n",  # pyplot in a pure layer
    "tc/core/relative.py": "from ..tracking import client\n",  # upward, relative
    "tc/config/ml.py": "import mlflow\n",  # mlflow outside tracking
    "tc/tracking/opt.py": "from optuna import trial\n",  # optuna outside sweep
    "tc/sweep/ml.py": "from mlflow.tracking import MlflowClient\n",  # mlflow outside tracking
    "tc/misc/x.py": "",  # a folder that is not a layer
    "tc/core/api.py": "def f():\n    from tc import train_job\n",  # upward through the public API
    "tc/core/api2.py": "import tc\n",  # the public API reaches every layer
    "tc/loose.py": "import mlflow\n",  # a module beside tc/__init__.py, in no layer
}
GOOD = {
    "tc/tracking/ok.py": "import mlflow\nfrom tc.core import data\nfrom tc.config import TrainConfig\n",
    "tc/sweep/ok.py": "import optuna\nfrom tc.tracking import client\n",
    "tc/core/ok.py": "from matplotlib.figure import Figure\nfrom tc.core import other\n",
    "entrypoints/ok.py": "import mlflow\nfrom tc.sweep import ok\n",
}


@pytest.mark.parametrize("bad", sorted(BAD))
def test_the_checker_catches_each_kind_of_violation(tmp_path, bad):
    for rel, code in {**GOOD, bad: BAD[bad]}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code)
    found = violations(tmp_path, layers(TABLE))
    assert len(found) >= 1 and all(f.startswith(bad) for f in found), found


def test_the_checker_passes_a_clean_tree(tmp_path):
    for rel, code in GOOD.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(code)
    assert violations(tmp_path, layers(TABLE)) == []
