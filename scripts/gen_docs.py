"""Regenerate MLproject's parameters and the tables in README.md and docs/*.md from the code, so they cannot drift.

    python scripts/gen_docs.py           # rewrite MLproject and every generated block in place
    python scripts/gen_docs.py --check   # rewrite nothing; exit 1 naming each stale file or block

The config dataclasses of `tc.config` (`tc.config.CONFIGS`, one per entry point, and COMMAND_LINE_ONLY's, one per
command that is no entry point) define every parameter once:
name, type, default, help string, choices, and whether it is required. From them this script writes
- MLproject: each entry point's `parameters` (MLflow's types: int, float, string; a boolean is a string
  true/false, an optional value's default is `none`; a required parameter has no default) and its `command`,
  which passes every parameter as `--name {name}` to the entry point's script (COMMANDS);
- the docs' parameter tables: a generated block is the text between `<!-- gen:NAME ... -->` and
  `<!-- /gen:NAME -->`; a few notes that need links or more words live in NOTES below, keyed by field name;
- the metric table, from `tc.analysis.registry.markdown_table()`.
A parameter an entry point takes besides its config's fields is declared in EXTRA_PARAMS. `tests/test_docs.py`
fails when MLproject or a committed block differs from what this script generates. After changing a config
field or a metric, run this script and commit what it rewrote.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import yaml  # MLflow's dependency

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's tc
    sys.path.insert(0, str(ROOT))

from tc.analysis import registry as metrics  # noqa: E402
from tc.config import CONFIGS, CORRUPTION_NAMES, CacheConfig  # noqa: E402
from tc.config.fields import base_type  # noqa: E402

# Parameters an entry point takes besides its config's fields (MLproject name -> (default, meaning)).
EXTRA_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    "train": {
        "resume_run_id": (
            "none",
            "continue this killed or failed run, with its own `config.json`, except `data_dir` and `download` "
            "(where the data is on this machine); other parameters are ignored (see [Resumable](#resumable))",
        ),
    },
}

# Words the full tables add to a field's help string (links, lists, consequences): field name -> text.
NOTES: dict[str, dict[str, str]] = {
    "train": {
        "dataset": "The first five are torchvision's files (see [Data](#data)); `digits` is scikit-learn's 8x8 "
        "digits, always available",
        "model": "`resnet20` is the CIFAR ResNet (6n+2 layers), `vgg` conv-BN-ReLU in 3 stages; see "
        "[own-models.md](own-models.md)",
        "schedule": "`cosine` decays to 0 over all steps of `epochs`; `constant` makes a run independent of the cap",
        "label_noise": "Seeded; 1.0 = random labels",
        "augment": "The crop pads zeros of 1/8 of the image size; CIFAR and Fashion-MNIST get flips, the digit "
        "sets (MNIST, SVHN, digits) do not",
        "freeze_cut": "No updates; BatchNorm statistics kept",
        "checkpoint_every": "The tc window needs at least 3 checkpoints",
        "data_dir": "See [Data](#data)",
        "download": "Needs internet",
    },
    "analyze": {
        "cuts": "ResNet-20's stages are 1, 4, 7, 10",
        "splits": "`train` is a seeded subset of the training set with the labels it was trained on; `corrupt` "
        "the test subset, corrupted",
        "bn_mode": "`recalibrate` uses `calibration_batches` training batches per composite (slow)",
        "corruptions": "Names: "
        + ", ".join(f"`{c}`" for c in CORRUPTION_NAMES)
        + ". Each test sample gets one (corruption, severity) pair, round-robin, so per-corruption scores cost "
        "no extra passes",
        "reference_run_id": "Gives `tc_test_crossseed`, `gm_disagreement` and `gm_js_disagreement`",
        "precision": "bf16 speeds up only with native bf16 (AVX512-BF16 or AMX CPUs, recent GPUs); elsewhere "
        "analyze says so, runs fp32 and tags the run `tc.precision_fallback`",
        "matrix": "`final` costs O(T) composites, `full` O(T²)",
        "phases": "Refused when a third holds no checkpoint",
        "anisotropy": "See [Anisotropy of SGD noise](#anisotropy-of-sgd-noise)",
        "measures": "See [Baseline measures](#baseline-measures-and-cheap-surrogates)",
        "data_dir": "A run trained with its own `data_dir` needs this (or `TC_DATA_DIR`) here; see [Data](#data)",
        "download": "Needs internet",
    },
    "sweep": {
        "n_trials": "See [Many workers](scaling.md#many-workers-many-machines)",
        "study_name": "Rerunning with an existing name adds trials to it",
        "storage": "The default journal lies beside the MLflow sqlite store",
        "search_space": "Default: lr, batch size, weight decay, width, train-set size (no label noise) "
        "(`tc.sweep.space.DEFAULT_SPACE`, fitted to the data set); e.g. `examples/digits_space.yaml`",
        "sampler": "`grid` takes 3 points per numeric range",
        "seed": "Re-seeded per trial from (seed, trial number); the second training seed is seed + 1",
        "dataset": "The other training settings are `train`'s defaults unless the space varies them",
    },
    "cache": {"max_gb": "The flag is `--max-gb`: `python -m tc.tracking.cache prune --max-gb 5`"},
}

# The configs of the commands that are not MLproject entry points (they would leave an empty run at each use): they
# get a parameter table, no MLproject entry.
COMMAND_LINE_ONLY: dict[str, type] = {"cache": CacheConfig}

# The script each entry point runs; it takes every parameter as `--name value` (`tc.config.parse_args`).
COMMANDS: dict[str, str] = {
    "train": "python entrypoints/train.py",
    "main": "python entrypoints/main.py",
    "analyze": "python entrypoints/analyze.py",
    "sweep": "python entrypoints/sweep.py",
    "report": "python entrypoints/report.py",
}
# Flags spelled otherwise than `--name` (entry point -> parameter -> flag).
FLAGS: dict[str, dict[str, str]] = {}

MLPROJECT_HEAD = """name: tc

# Generated by `python scripts/gen_docs.py` from the config dataclasses of tc/config/ (one per entry point): edit
# those, then regenerate. conda users: `mlflow run .` builds conda.yaml. Everyone else (and all of tc's docs and
# tests) passes `--env-manager local`, because MLflow picks conda whenever conda.yaml exists.
conda_env: conda.yaml

entry_points:
"""

# MLflow's parameter types: a boolean travels as the string true/false (cast by `tc.config.from_strings`).
MLFLOW_TYPES = {int: "int", float: "float", str: "string", bool: "string"}


def mlflow_type(cls: type, name: str) -> str:
    """The MLproject type of field `name` of config `cls` (an optional field: its type's)."""
    return MLFLOW_TYPES[base_type(typing.get_type_hints(cls)[name])]


def is_required(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("required"))


def mlproject_parameters(entry: str) -> dict[str, dict]:
    """The `parameters` of one MLproject entry point, from its config: name -> {type, default} (no default: a
    required parameter), then EXTRA_PARAMS."""
    cls = CONFIGS[entry]
    out: dict[str, dict] = {}
    for f in dataclasses.fields(cls):
        kind = mlflow_type(cls, f.name)
        out[f.name] = {"type": kind} if is_required(f) else {"type": kind, "default": mlflow_default(kind, f.default)}
    for name, (default, _) in EXTRA_PARAMS.get(entry, {}).items():
        out[name] = {"type": "string", "default": default}
    return out


def mlflow_default(kind: str, value: object) -> object:
    """A default as MLproject holds it: a number for int and float, else the command line's string."""
    return value if kind in ("int", "float") and value is not None else param_str(value)


def command_words(entry: str) -> list[str]:
    """The entry point's command, in pieces: its script, then `--name {name}` for every parameter in the config's
    order (MLflow substitutes `{name}` with the parameter's value, shell-quoted)."""
    flags = FLAGS.get(entry, {})
    return [COMMANDS[entry], *(f"{flags.get(n, '--' + n)} {{{n}}}" for n in mlproject_parameters(entry))]


def command(entry: str) -> str:
    return " ".join(command_words(entry))


def folded(words: list[str], indent: str, width: int = 110) -> list[str]:
    """`words` as lines of at most `width` characters (a longer word alone), each beginning with `indent`: the
    lines of a YAML folded block, which joins them with single spaces."""
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(indent + word)
    return lines


def mlproject_text() -> str:
    """The whole MLproject: MLPROJECT_HEAD, then each entry point of `tc.config.CONFIGS` in its order."""
    lines = [MLPROJECT_HEAD.rstrip("\n")]
    for entry in CONFIGS:
        lines += [f"  {entry}:", "    parameters:"]
        for name, spec in mlproject_parameters(entry).items():
            flow = yaml.safe_dump(spec, default_flow_style=True, sort_keys=False, width=10**6).strip()
            lines.append(f"      {name}: {flow}")
        lines.append("    command: >-")  # folded: the lines below join with single spaces
        lines += folded(command_words(entry), " " * 6)
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"


# The README's short tables: the five most-used parameters of each everyday command.
README_PARAMS: dict[str, tuple[str, ...]] = {
    "train": ("dataset", "model", "epochs", "train_size", "checkpoint_every"),
    "analyze": ("run_id", "cuts", "max_samples", "matrix", "anisotropy"),
    "sweep": ("n_trials", "study_name", "storage", "search_space", "sampler"),
}

HEADER = "| parameter | default | meaning |\n|---|---|---|"


def param_str(value: object) -> str:
    """A default as MLproject and the command line spell it (none, true/false): `tc.tracking.client.param_str`'s rule,
    repeated here so the docs need no MLflow import."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def no_link(text: str) -> str:
    """`text` with `](` escaped, so that `g[t, T](x)` in a table is not taken for a link (the help strings and
    the metric table hold no links)."""
    return text.replace("](", "]\\(")


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: pipes escaped, <...> escaped so it is not taken for HTML, no links."""
    return no_link(text.replace("|", "\\|").replace("<", "\\<").replace(">", "\\>"))


def _sentence(text: str) -> str:
    return text if text.endswith(".") else text + "."


def _meaning(entry: str, f: dataclasses.Field, notes: bool) -> str:
    """A field's help string, its choices and (with `notes`) its note from NOTES, as one table cell."""
    meaning = _cell(f.metadata.get("help", ""))
    if f.metadata.get("choices"):
        meaning = _sentence(meaning) + " One of " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
    note = NOTES.get(entry, {}).get(f.name) if notes else None
    if note:
        meaning = _sentence(meaning) + " " + note.replace("|", "\\|")  # notes are Markdown already
    return _sentence(meaning)


def rows(entry: str, notes: bool = True) -> list[tuple[str, str, str]]:
    """(name, default, meaning) for every parameter of `entry`, in the config's field order, then the extras."""
    out = []
    for f in dataclasses.fields(CONFIGS[entry] if entry in CONFIGS else COMMAND_LINE_ONLY[entry]):
        out.append((f.name, "(required)" if is_required(f) else f"`{param_str(f.default)}`", _meaning(entry, f, notes)))
    for name, (default, meaning) in EXTRA_PARAMS.get(entry, {}).items():
        out.append((name, f"`{default}`", _sentence(meaning)))
    return out


def param_table(entry: str, names: tuple[str, ...] | None = None, notes: bool = True) -> str:
    """The Markdown parameter table of `entry`: every parameter, or `names` in that order; `notes=False` gives
    the help strings alone (the README's short tables)."""
    by_name = {r[0]: r for r in rows(entry, notes)}
    chosen = list(by_name.values()) if names is None else [by_name[n] for n in names]
    return "\n".join([HEADER, *(f"| `{n}` | {d} | {m} |" for n, d, m in chosen)])


# Block name -> (the file it lives in, its generator).
BLOCKS: dict[str, tuple[str, Callable[[], str]]] = {
    "train-params": ("docs/train.md", lambda: param_table("train")),
    "analyze-params": ("docs/analyze.md", lambda: param_table("analyze")),
    "sweep-params": ("docs/sweep.md", lambda: param_table("sweep")),
    "main-params": ("README.md", lambda: param_table("main")),
    "report-params": ("docs/report.md", lambda: param_table("report")),
    "cache-params": ("docs/analyze.md", lambda: param_table("cache")),
    "metrics": ("docs/analyze.md", lambda: no_link(metrics.markdown_table())),
    **{
        f"readme-{entry}": ("README.md", lambda entry=entry: param_table(entry, README_PARAMS[entry], notes=False))
        for entry in README_PARAMS
    },
}

_BLOCK = re.compile(r"(<!-- gen:(?P<name>[\w-]+)[^\n]*?-->\n)(?P<body>.*?)(<!-- /gen:(?P=name) -->)", re.S)


def rewrite(text: str) -> tuple[str, list[str]]:
    """`text` with every generated block regenerated, and the names of the blocks that changed. An unknown
    block name is an error (a typo would otherwise leave a table unchecked)."""
    stale: list[str] = []

    def fill(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise ValueError(f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}")
        body = BLOCKS[name][1]() + "\n"
        if body != m.group("body"):
            stale.append(name)
        return m.group(1) + body + m.group(4)

    return _BLOCK.sub(fill, text), stale


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks_in(text: str) -> list[str]:
    return [m.group("name") for m in _BLOCK.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report stale files and blocks and exit 1; write nothing")
    args = ap.parse_args(argv)
    found: dict[str, list[Path]] = {}
    stale_any = False
    mlproject = ROOT / "MLproject"
    if mlproject.read_text() != mlproject_text():
        stale_any = True
        if args.check:
            print("MLproject: stale; run `python scripts/gen_docs.py`")
        else:
            mlproject.write_text(mlproject_text())
            print("MLproject: regenerated")
    for path in doc_files():
        text = path.read_text()
        for name in blocks_in(text):
            found.setdefault(name, []).append(path)
        new, stale = rewrite(text)
        if stale:
            stale_any = True
            rel = path.relative_to(ROOT)
            if args.check:
                print(f"{rel}: stale generated block(s): {', '.join(stale)}")
            else:
                path.write_text(new)
                print(f"{rel}: regenerated {', '.join(stale)}")
    for name, (where, _) in BLOCKS.items():
        if [p.relative_to(ROOT).as_posix() for p in found.get(name, [])] != [where]:
            print(f"block {name!r} must appear once, in {where}; found in {found.get(name, [])}")
            return 1
    return 1 if (args.check and stale_any) else 0


if __name__ == "__main__":
    sys.exit(main())
