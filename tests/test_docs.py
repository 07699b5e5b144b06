"""The docs cannot drift from the code: MLproject and the generated tables are current (generated from the
configs), every relative link resolves, every documented `mlflow run` passes `--env-manager local` and
`--experiment-name tc`, the README stays short."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tc.config import AnalyzeConfig, TrainConfig, cast_field, from_strings, opt
from tests.paths import resolves

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def test_every_generated_block_is_current_and_where_it_belongs():
    for path in DOCS:
        _, stale = gen.rewrite(path.read_text())
        assert not stale, f"{path.name}: stale {stale}; run `python scripts/gen_docs.py` and commit"
    for name, (where, _) in gen.BLOCKS.items():
        holders = [p.relative_to(ROOT).as_posix() for p in DOCS if name in gen.blocks_in(p.read_text())]
        assert holders == [where], (name, holders)
        assert gen.blocks_in((ROOT / where).read_text()).count(name) == 1, name
    assert gen.main(["--check"]) == 0


def test_mlproject_is_generated_from_the_configs():
    assert (ROOT / "MLproject").read_text() == gen.mlproject_text(), "run `python scripts/gen_docs.py` and commit"
    assert list(MLPROJECT) == list(gen.CONFIGS) == list(gen.COMMANDS)  # every entry point has a config and a script


def test_a_table_and_mlproject_go_stale_when_a_config_field_changes(monkeypatch):
    @dataclass(frozen=True)
    class Changed(TrainConfig):
        epochs: int = opt(7, "passes over the training set (with target_loss: the cap)")

    # from the docs as the code generates them today (this test checks the mechanism, the one above the docs)
    train_md = gen.rewrite((ROOT / "docs" / "train.md").read_text())[0]
    readme = gen.rewrite((ROOT / "README.md").read_text())[0]
    mlproject = gen.mlproject_text()
    monkeypatch.setitem(gen.CONFIGS, "train", Changed)
    new, stale = gen.rewrite(train_md)
    assert stale == ["train-params"] and "| `epochs` | `7` |" in new and "| `epochs` | `7` |" not in train_md
    assert gen.rewrite(readme)[1] == ["readme-train"]
    changed = [a for a, b in zip(mlproject.splitlines(), gen.mlproject_text().splitlines(), strict=True) if a != b]
    assert changed == ["      epochs: {type: int, default: 5}"]  # train's; main's epochs passes 5 on to train
    assert "      epochs: {type: int, default: 7}" in gen.mlproject_text()
    assert gen.main(["--check"]) == 1  # what `--check` reports


def test_a_new_field_reaches_mlproject_its_command_and_the_table(monkeypatch):
    @dataclass(frozen=True)
    class Grown(TrainConfig):
        warmup: float = opt(0.0, "fraction of training with a linear learning-rate warm-up")

    monkeypatch.setitem(gen.CONFIGS, "train", Grown)
    text = gen.mlproject_text()
    assert yaml.safe_load(text)["entry_points"]["train"]["parameters"]["warmup"] == {"type": "float", "default": 0.0}
    assert "--warmup {warmup}" in yaml.safe_load(text)["entry_points"]["train"]["command"]
    assert "| `warmup` | `0.0` | fraction of training with a linear learning-rate warm-up. |" in gen.param_table(
        "train"
    )


def test_a_hand_edited_table_is_stale_and_regenerated():
    text = gen.rewrite((ROOT / "docs" / "analyze.md").read_text())[0]
    row = "| `window` | `0.5` |"
    assert row in text
    edited = text.replace(row, "| `window` | `0.25` |")
    new, stale = gen.rewrite(edited)
    assert stale == ["analyze-params"] and new == text
    edited = text.replace("| `tc_mmd` |", "| `tc_mmd_mean` |")
    assert gen.rewrite(edited) == (text, ["metrics"])


def test_an_unknown_block_name_is_an_error():
    with pytest.raises(ValueError, match="unknown generated block 'trian-params'"):
        gen.rewrite("<!-- gen:trian-params -->\n| x |\n<!-- /gen:trian-params -->\n")


MLPROJECT = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]
TYPES = {int: "int", float: "float", str: "string", bool: "string"}  # MLflow passes booleans as strings


@pytest.mark.parametrize("entry", sorted(gen.CONFIGS))
def test_mlproject_parameters_agree_with_the_config(entry):
    """The committed MLproject read as data, against the dataclass (independently of how gen_docs writes it)."""
    cls = gen.CONFIGS[entry]
    declared = MLPROJECT[entry]["parameters"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    extras = gen.EXTRA_PARAMS.get(entry, {})
    assert list(declared) == list(fields) + list(extras), "MLproject and the config name different parameters"
    hints = typing.get_type_hints(cls)
    for name, f in fields.items():
        spec = declared[name]
        annotation = hints[name]
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        assert spec["type"] == TYPES[annotation], (entry, name, spec["type"], annotation)
        if "default" not in spec:  # a required parameter: the config refuses its empty default
            assert f.metadata["required"] and f.default == "", (entry, name)
            with pytest.raises(ValueError, match=f"{name} is required"):
                cls()
            continue
        assert not f.metadata["required"], (entry, name)
        assert cast_field(cls, name, str(spec["default"])) == f.default, (entry, name, spec["default"], f.default)
    for name, (default, _) in extras.items():
        assert declared[name] == {"type": "string", "default": default}, (entry, name)
    command = MLPROJECT[entry]["command"]
    for name in declared:
        assert f"{gen.FLAGS.get(entry, {}).get(name, '--' + name)} {{{name}}}" in command, (entry, name)


def _required(cls: type) -> dict[str, str]:
    """A value for each required field of `cls` (what `mlflow run` must be given)."""
    return {f.name: "r1" for f in dataclasses.fields(cls) if f.metadata["required"]}


@pytest.mark.parametrize("entry", sorted(gen.CONFIGS))
def test_mlflow_runs_each_command_with_the_config_defaults(entry, tmp_path):
    """MLflow's own reading of MLproject: the command it builds with the defaults parses to the default config."""
    from mlflow.projects import _project_spec

    cls = gen.CONFIGS[entry]
    project = _project_spec.load_project(str(ROOT))
    words = shlex.split(project.get_entry_point(entry).compute_command(_required(cls), str(tmp_path)))
    script = shlex.split(gen.COMMANDS[entry])
    assert words[: len(script)] == script
    flag_names = {flag: name for name, flag in gen.FLAGS.get(entry, {}).items()}
    pairs = dict(zip(words[len(script) :: 2], words[len(script) + 1 :: 2], strict=True))
    values = {flag_names.get(flag, flag.removeprefix("--")): value for flag, value in pairs.items()}
    extras = {name: values.pop(name) for name in gen.EXTRA_PARAMS.get(entry, {})}
    assert from_strings(cls, values) == from_strings(cls, _required(cls))
    assert extras == {name: default for name, (default, _) in gen.EXTRA_PARAMS.get(entry, {}).items()}


def table_rows(table: str) -> list[tuple[str, str, str]]:
    """(name, default, meaning) of each row of a generated parameter table, backticks stripped."""
    out = []
    for line in table.splitlines()[2:]:
        name, default, meaning = re.fullmatch(r"\| `([^`]+)` \| (.+?) \| (.+) \|", line).groups()
        out.append((name, default.strip("`"), meaning))
    return out


def test_every_entry_point_has_a_parameter_table():
    assert {f"{entry}-params" for entry in MLPROJECT} <= set(gen.BLOCKS)
    for entry in gen.CONFIGS:
        rows = table_rows(gen.param_table(entry))
        assert [r[0] for r in rows] == list(MLPROJECT[entry]["parameters"])  # MLproject's names, in its order
        for name, default, meaning in rows:
            spec = MLPROJECT[entry]["parameters"][name]
            assert default == ("(required)" if "default" not in spec else gen.param_str(spec["default"]))
            assert meaning.strip(". ")


def test_required_comes_from_the_field():
    assert {r[0]: r[1] for r in gen.rows("analyze")}["run_id"] == "(required)"
    assert gen.mlproject_parameters("analyze")["run_id"] == {"type": "string"}

    @dataclass(frozen=True)
    class Demanding(AnalyzeConfig):
        cuts: str = opt("", "cuts", required=True)

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(gen.CONFIGS, "analyze", Demanding)
        assert {r[0]: r[1] for r in gen.rows("analyze")}["cuts"] == "(required)"
        assert gen.mlproject_parameters("analyze")["cuts"] == {"type": "string"}


@pytest.mark.parametrize("entry", sorted(gen.CONFIGS))
def test_every_note_is_a_field_and_every_field_has_help(entry):
    fields = {f.name: f for f in dataclasses.fields(gen.CONFIGS[entry])}
    assert set(gen.NOTES.get(entry, {})) <= set(fields), "a NOTES key is no field of the config"
    assert not [n for n, f in fields.items() if not f.metadata.get("help", "").strip()], "a field without help"
    assert set(gen.README_PARAMS.get(entry, ())) <= set(fields)


def _outside_code(text: str) -> str:
    """`text` without fenced code blocks and inline code spans (links and headings there are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("**", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        s = slug(heading)
        out.add(s if s not in seen else f"{s}-{seen[s]}")
        seen[s] = seen.get(s, 0) + 1
    return out


def test_slug_follows_github():
    assert slug("Reading the numbers: the quick-start run") == "reading-the-numbers-the-quick-start-run"
    assert slug("Cost (measured with `python benchmarks/cpu_guard.py`)") == (
        "cost-measured-with-python-benchmarkscpu_guardpy"
    )
    assert slug("Runs in the MLflow UI and the Optuna dashboard") == "runs-in-the-mlflow-ui-and-the-optuna-dashboard"


def broken_links(path: Path, text: str) -> list[str]:
    """The relative links and images of `text` (the file at `path`) whose file or heading does not exist."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _outside_code(text)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.is_file():
            broken.append(f"{path.name}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{path.name}: {target} (no such heading)")
    return broken


def test_every_relative_link_resolves_to_a_file_and_anchor():
    broken = [b for path in DOCS for b in broken_links(path, path.read_text())]
    assert not broken, "\n".join(broken)


def test_a_broken_link_or_anchor_is_found():
    readme = ROOT / "README.md"
    text = "[a](docs/train.md#data) [b](docs/nope.md) [c](docs/train.md#nope) `[d](code.md)` [e](https://x.org/y)"
    assert broken_links(readme, text) == [
        "README.md: docs/nope.md (no such file)",
        "README.md: docs/train.md#nope (no such heading)",
    ]


def mlflow_run_commands(text: str) -> list[str]:
    """Every `mlflow run` command in `text`: continued shell lines joined, up to a closing backtick or a comment."""
    text = text.replace("\\\n", " ")  # one logical line per continued shell command
    return [
        line[m.start() :].split("`")[0].split(" # ")[0]
        for line in text.splitlines()
        for m in re.finditer(r"mlflow run [^`\s]", line)
    ]


def commands_without(flag: str, name: str, text: str) -> list[str]:
    """The `mlflow run` commands of `text` (the file `name`) that do not pass `flag`."""
    return [f"{name}: {command}" for command in mlflow_run_commands(text) if flag not in command]


def test_every_documented_mlflow_run_passes_env_manager_local():
    missing = [c for path in DOCS for c in commands_without("--env-manager local", path.name, path.read_text())]
    assert not missing, "\n".join(missing)


def test_every_documented_mlflow_run_passes_experiment_name_tc():
    """As the README's: every run lands in the experiment `tc` (see docs/ui.md), not in MLflow's Default."""
    missing = [c for path in DOCS for c in commands_without("--experiment-name tc", path.name, path.read_text())]
    assert not missing, "\n".join(missing)


def test_a_command_without_a_flag_is_found():
    text = (
        "```bash\n"
        "mlflow run . --env-manager local --experiment-name tc -e train \\\n    -P epochs=1\n"  # good, continued
        "mlflow run . --experiment-name tc -e sweep   # --env-manager local only in the comment\n"
        "mlflow run . -e analyze \\\n    --env-manager local -P run_id=x\n"  # flag on the continuation line
        "```\n"
        "Run `mlflow run . --env-manager local -e report` (inline), or see `mlflow run` (no command).\n"
    )
    assert mlflow_run_commands(text) == [
        "mlflow run . --env-manager local --experiment-name tc -e train      -P epochs=1",
        "mlflow run . --experiment-name tc -e sweep  ",
        "mlflow run . -e analyze      --env-manager local -P run_id=x",
        "mlflow run . --env-manager local -e report",
    ]
    assert commands_without("--env-manager local", "x.md", text) == [
        "x.md: mlflow run . --experiment-name tc -e sweep  "
    ]
    assert commands_without("--experiment-name tc", "x.md", text) == [
        "x.md: mlflow run . -e analyze      --env-manager local -P run_id=x",
        "x.md: mlflow run . --env-manager local -e report",
    ]


def test_readme_is_a_two_minute_read():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    # the quick start's printed output sits between one marker pair, for the lead to replace
    assert text.count("<!-- quickstart-output -->") == 1 and text.count("<!-- /quickstart-output -->") == 1
    assert text.index("<!-- quickstart-output -->") < text.index("=== tc quick start ===")
    assert text.index("=== tc quick start ===") < text.index("<!-- /quickstart-output -->")
    # and it links every docs page
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name}" in text, f"README does not link docs/{page.name}"


def test_every_tc_path_a_text_names_resolves():
    """Issue 20 moved every module: a path in a doc, docstring, comment or test that still names an old home
    (the sweep package's old `HEADLINE`, the tracking package's old `param_str`) misleads its reader. MLflow
    tags that look like paths (`tc.analysis.<setting>`, one per AnalyzeConfig field) are data, not code, and are
    left out."""
    import dataclasses
    import subprocess

    from tc.config import AnalyzeConfig

    layers = ("config", "core", "stats", "analysis", "tracking", "sweep", "report")
    tags = {f"tc.analysis.{f.name}" for f in dataclasses.fields(AnalyzeConfig)}
    pattern = re.compile(r"(?<![\w/.])tc\.(?:" + "|".join(layers) + r")(?:\.[A-Za-z_]\w*)*")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    stale = set()
    for name in files:
        if not name.endswith((".py", ".md", ".yaml")) or name.startswith("docs/report/") or name == "docs/REPORT.md":
            continue  # the published report and its stored tables are dated records, re-rendered, not edited
        for m in pattern.finditer((ROOT / name).read_text()):
            dotted = m.group(0)
            if "no_such_name" not in dotted and dotted not in tags and not resolves(dotted):
                stale.add(f"{name}: {dotted}")
    assert sorted(stale) == []
