import dataclasses

import pytest

from tc.config import TrainConfig, from_strings, parse_args


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
