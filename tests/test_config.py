import dataclasses
import types

import pytest

from tc.analysis.splits import parse_cuts
from tc.config import AnalyzeConfig, CutSpec, TrainConfig, from_strings, parse_args
from tc.core.corruptions import CORRUPTIONS


def test_strings_are_cast_to_field_types():
    cfg = from_strings(TrainConfig, {"epochs": "3", "lr": "0.05", "augment": "true", "data_dir": "none"})
    assert (cfg.epochs, cfg.lr, cfg.augment, cfg.data_dir) == (3, 0.05, True, None)


def test_shell_quotes_left_by_mlflow_are_stripped():
    # MLflow issue #6811: an empty or spaced value arrives with its quotes.
    cfg = from_strings(TrainConfig, {"data_dir": "''", "dataset": "'digits'"})
    assert cfg.data_dir is None and cfg.dataset == "digits"


def test_zero_depth_resolves_to_model_default_and_is_logged_resolved():
    assert TrainConfig(model="resnet20").depth == 20
    assert TrainConfig(model="mlp").depth == 3
    assert dataclasses.asdict(TrainConfig(model="vgg"))["depth"] == 6


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"dataset": "imagenet"}, ["dataset", "fashion-mnist", "cifar10", "digits"]),
        ({"optimizer": "lbfgs"}, ["optimizer", "sgd", "adam"]),
        ({"schedule": "linear"}, ["schedule", "cosine"]),
        ({"label_noise": "1.5"}, ["label_noise", "<= 1"]),
        ({"lr": "-1"}, ["lr"]),
        ({"epochs": "2.5"}, ["epochs", "int"]),
        ({"augment": "maybe"}, ["augment", "bool"]),
        ({"depth": "21"}, ["depth", "6n+2"]),
        ({"bogus": "1"}, ["bogus", "valid"]),
    ],
)
def test_bad_values_name_the_field_and_the_valid_choices(values, words):
    with pytest.raises(ValueError) as err:
        from_strings(TrainConfig, values)
    for word in words:
        assert word in str(err.value)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().lr = 1.0


def test_argparse_round_trip_keeps_defaults():
    cfg = parse_args(TrainConfig, ["--dataset", "digits", "--width", "8"])
    assert cfg == TrainConfig(dataset="digits", width=8)


def test_analyze_list_fields_are_parsed_once_into_typed_tuples_and_logged_as_given():
    raw = {"run_id": "r", "splits": "test, train", "cuts": "4,1", "corruptions": "jpeg,contrast", "severities": "1,5"}
    cfg = from_strings(AnalyzeConfig, raw)
    assert cfg.split_names == ("test", "train")
    assert cfg.cut_spec == CutSpec("list", (1, 4))
    assert cfg.corruption_names == ("jpeg", "contrast") and cfg.severity_levels == (1, 5)
    logged = dataclasses.asdict(cfg)  # what analyze logs: the command-line strings, no parsed extras
    assert {k: logged[k] for k in raw} == raw and set(logged) == {f.name for f in dataclasses.fields(AnalyzeConfig)}
    default = AnalyzeConfig(run_id="r")
    assert default.corruption_names == tuple(CORRUPTIONS) and default.severity_levels == (3,)
    assert default.cut_spec == CutSpec("stages") and default.split_names == ("train", "test", "corrupt")
    assert dataclasses.replace(cfg, splits="corrupt").split_names == ("corrupt",)  # re-parsed on replace


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"cuts": "abc"}, ["cuts='abc'", "stages, all"]),
        ({"cuts": "0,2"}, ["cuts='0,2'", "stages, all"]),
        ({"splits": "train,val"}, ["splits", "corrupt"]),
        ({"splits": ","}, ["names no split"]),
        ({"corruptions": "fog"}, ["corruptions", "jpeg"]),
        ({"severities": "3,6"}, ["severities", "1..5"]),
        # empty lists (`-P corruptions=`, MLflow's quoted empty value, a lone comma) name nothing: refused, not
        # parsed to () (an empty corrupt split would be uninitialised memory)
        ({"corruptions": ""}, ["corruptions=''", "names no corruption", "jpeg"]),
        ({"corruptions": "''"}, ["corruptions=''", "names no corruption"]),
        ({"corruptions": ","}, ["corruptions=','", "names no corruption"]),
        ({"corruptions": " , "}, ["corruptions", "names no corruption"]),
        ({"severities": ""}, ["severities=''", "names no severity", "1..5"]),
        ({"severities": ","}, ["severities=','", "names no severity"]),
        ({"splits": ""}, ["splits=''", "names no split"]),
        ({"splits": "''"}, ["splits=''", "names no split"]),
        ({"cuts": ""}, ["cuts=''", "stages, all"]),
        ({"cuts": ","}, ["cuts=','", "stages, all"]),
        ({"checkpoints": ""}, ["checkpoints=''", "every:K"]),
        ({"checkpoints": ","}, ["checkpoints=','", "every:K"]),
        ({"checkpoints": "every:"}, ["checkpoints='every:'", "every:K"]),
        ({"checkpoints": "fractions:"}, ["checkpoints='fractions:'"]),
        # a list of steps must name two distinct ones (an analysis compares checkpoints): refused up front
        ({"checkpoints": "5"}, ["checkpoints='5'", "at least two"]),
        ({"checkpoints": "5,5"}, ["checkpoints='5,5'", "at least two"]),
        # a name listed twice would count its samples or pairs twice
        ({"splits": "test,test"}, ["splits='test,test'", "'test' twice"]),
        ({"corruptions": "jpeg,contrast,jpeg"}, ["corruptions", "'jpeg' twice"]),
        ({"severities": "3,3"}, ["severities='3,3'", "'3' twice"]),
    ],
)
def test_bad_analyze_lists_fail_when_the_config_is_built(values, words):
    with pytest.raises(ValueError) as err:
        from_strings(AnalyzeConfig, {"run_id": "r", **values})
    for word in words:
        assert word in str(err.value)


def test_a_cut_spec_resolves_against_the_model():
    model = types.SimpleNamespace(cuts=[1, 2, 3, 4], stage_cuts=[2, 4])
    assert CutSpec.parse("stages").resolve(model) == [2, 4]
    assert CutSpec.parse("all").resolve(model) == [1, 2, 3, 4]
    assert CutSpec.parse("3, 1").resolve(model) == [1, 3] == parse_cuts("3,1", model)
    with pytest.raises(ValueError, match=r"comma list from \[1, 2, 3, 4\]"):
        CutSpec.parse("1,7").resolve(model)


@pytest.mark.parametrize("text", ["5", "5,5"])
def test_one_check_of_at_least_two_steps_before_and_after_the_run_is_read(text):
    # the config refuses the list up front; tc.analysis.splits.select_steps, called with a run's steps, says the same
    from tc.analysis.splits import select_steps
    from tc.config.analyze import CheckpointSpec

    with pytest.raises(ValueError) as before:
        CheckpointSpec.parse(text)
    with pytest.raises(ValueError) as after:
        select_steps(text, [0, 5, 10])
    assert str(before.value) == str(after.value) and "at least two" in str(after.value)


CHECKPOINT_TEXTS = [
    "all",
    "every:2",
    "every: 3",
    "fractions:3",
    "0,10",
    "10, 0,10",
    "7,10",  # well formed, but step 7 is not in the run
    "5",
    "5,5",
    "every:0",
    "every:-1",
    "every:",
    "fractions:1",
    "fractions:x",
    "1,x",
    "-1,5",
    "",
    ",",
    "²,5",
]


@pytest.mark.parametrize("text", CHECKPOINT_TEXTS)
def test_the_checkpoints_grammar_has_one_parser(text):
    """The config (before a run is read) and `select_steps` (after) refuse the same texts with the same message:
    `select_steps` parses with `CheckpointSpec.parse` and only adds the check that listed steps exist."""
    from tc.analysis.splits import select_steps
    from tc.config import CheckpointSpec

    steps = [0, 5, 10, 15]
    try:
        spec = CheckpointSpec.parse(text)
    except ValueError as before:
        with pytest.raises(ValueError) as after:
            select_steps(text, steps)
        assert str(after.value) == str(before)
        with pytest.raises(ValueError, match="checkpoints="):
            from_strings(AnalyzeConfig, {"run_id": "r", "checkpoints": text})
        return
    assert from_strings(AnalyzeConfig, {"run_id": "r", "checkpoints": text}).checkpoint_spec == spec
    if spec.kind == "list" and not set(spec.steps) <= set(steps):
        with pytest.raises(ValueError, match=r"steps \[7\] are not in the run"):
            select_steps(spec, steps)
    else:
        assert select_steps(spec, steps) == select_steps(text, steps)


def test_checkpoint_specs_parse_to_their_parts():
    from tc.analysis.splits import select_steps
    from tc.config import CheckpointSpec

    assert CheckpointSpec.parse("all") == CheckpointSpec("all")
    assert CheckpointSpec.parse("every: 3") == CheckpointSpec("every", 3)
    assert CheckpointSpec.parse("fractions:5") == CheckpointSpec("fractions", 5)
    assert CheckpointSpec.parse("10,0,10") == CheckpointSpec("list", steps=(0, 10))
    steps = list(range(0, 100, 10))
    assert select_steps("every:4", steps) == [0, 40, 80, 90]  # every 4th from the first, and the last
    assert select_steps("fractions:3", steps) == [0, 40, 90]  # nearest 0, 45, 90 (ties go to the earlier step)
    assert select_steps("90,0", steps) == [0, 90]


def test_main_config_keeps_the_old_defaults_and_takes_the_help_of_what_it_passes_on():
    from tc.config import MainConfig

    assert dataclasses.asdict(MainConfig()) == {
        "epochs": 5,
        "train_size": 5000,
        "width": 16,
        "seed": 0,
        "max_samples": 500,
    }
    helps = {f.name: f.metadata["help"] for f in dataclasses.fields(MainConfig)}
    train = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    assert helps["epochs"] == train["epochs"] + "; passed to `train`"
    assert helps["max_samples"].endswith("; passed to `analyze`")
    assert parse_args(MainConfig, ["--epochs", "2", "--train_size", "0"]) == MainConfig(epochs=2, train_size=0)


@pytest.mark.parametrize("value", ["-2", "-1", "0", "1", "3"])
@pytest.mark.parametrize(
    ("name", "target"),
    [("epochs", "train"), ("train_size", "train"), ("width", "train"), ("seed", "train"), ("max_samples", "analyze")],
)
def test_main_refuses_what_the_config_it_passes_to_refuses_with_its_message(name, target, value):
    """One rule per parameter: MainConfig checks a value by the config it passes it to, not by a copy of its range."""
    from tc.config import MainConfig

    cls, base = (TrainConfig, {}) if target == "train" else (AnalyzeConfig, {"run_id": "r"})
    try:
        from_strings(cls, {**base, name: value})
        expected = None
    except ValueError as e:
        expected = str(e)
    try:
        from_strings(MainConfig, {name: value})
        got = None
    except ValueError as e:
        got = str(e)
    assert got == expected


def test_main_follows_a_stricter_train_config(monkeypatch):
    """A rule added to TrainConfig reaches the quick start's own check (no copy of the ranges to forget)."""
    from tc.config import MainConfig
    from tc.config import main as main_config

    @dataclasses.dataclass(frozen=True)
    class Stricter(TrainConfig):
        def __post_init__(self) -> None:
            super().__post_init__()
            if self.epochs > 100:
                raise ValueError(f"epochs={self.epochs} is out of range; it must be <= 100")

    monkeypatch.setattr(main_config, "TrainConfig", Stricter)
    with pytest.raises(ValueError, match="epochs=101 is out of range"):
        MainConfig(epochs=101)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"epochs": "0"}, ["epochs=0", ">= 1"]),
        ({"width": "-4"}, ["width=-4", ">= 1"]),
        ({"train_size": "-1"}, ["train_size=-1", ">= 0"]),
        ({"max_samples": "1.5"}, ["max_samples='1.5'", "int"]),
        ({"seed": "x"}, ["seed='x'", "int"]),
    ],
)
def test_bad_main_values_name_the_field_and_the_valid_range(values, words):
    from tc.config import MainConfig

    with pytest.raises(ValueError) as err:
        from_strings(MainConfig, values)
    for word in words:
        assert word in str(err.value)


def test_report_config_keeps_the_old_meanings():
    from tc.config import ReportConfig

    cfg = parse_args(ReportConfig, [])
    # trials 0: each environment's own size (issue 23: environments are sized apart, docs/report.md)
    assert (cfg.quick, cfg.trials, cfg.out_dir, cfg.rerender) == (False, 0, None, False)
    cfg = parse_args(ReportConfig, ["--quick", "true", "--trials", "6", "--out_dir", "'/tmp/r'"])
    assert (cfg.quick, cfg.trials, cfg.out_dir) == (True, 6, "/tmp/r")
    assert parse_args(ReportConfig, ["--rerender", "true", "--out_dir", "x"]).rerender
    for argv, words in [
        (["--trials", "-1"], ["trials=-1", ">= 0"]),
        (["--quick", "maybe"], ["quick='maybe'", "bool"]),
        (["--rerender", "true", "--quick", "true"], ["rerender=true", "quick=true", "drop quick and trials"]),
        (["--rerender", "true", "--trials", "6"], ["trials=6", "settings.json"]),
    ]:
        with pytest.raises(ValueError) as err:
            parse_args(ReportConfig, argv)
        assert all(w in str(err.value) for w in words), (argv, str(err.value))


def test_main_and_report_refuse_a_bad_value_before_any_run(mlflow_store, capsys, monkeypatch):
    """Exit 2 with the config's message; no job starts: the only run is the refusal's record, FAILED and named
    `refused: ...` (tc.tracking.refusals; tests/test_refusals.py has every entry point)."""
    from mlflow.tracking import MlflowClient

    from entrypoints import main as quick
    from entrypoints import report as entry

    def no_job(*a, **k):
        raise AssertionError("a bad parameter reached a job")

    monkeypatch.setattr(quick, "train_job", no_job)
    monkeypatch.setattr(entry.produce, "produce", no_job)
    assert quick.main(["--epochs", "0"]) == 2
    assert "tc main: epochs=0 is out of range" in capsys.readouterr().err
    assert entry.main(["--trials", "-3"]) == 2
    assert "tc report: trials=-3 is out of range" in capsys.readouterr().err
    runs = MlflowClient().search_runs(["0"])
    assert sorted(r.info.run_name for r in runs) == [
        "refused: epochs=0 is out of range",
        "refused: trials=-3 is out of range",
    ]


def test_a_cache_config_casts_and_checks_its_cap():
    from tc.config import CacheConfig

    assert from_strings(CacheConfig, {"max_gb": "2.5"}).max_gb == 2.5
    with pytest.raises(ValueError, match=r"max_gb=-1.0 is out of range"):
        from_strings(CacheConfig, {"max_gb": "-1"})
