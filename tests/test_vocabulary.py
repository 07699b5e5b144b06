"""The configs own the names they validate (`tc.config.vocabulary`); core's registries are keyed by the same names,
and nothing under tc/config imports another tc package (the configs are the bottom layer)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tc.config import vocabulary
from tc.core import corruptions, fx_stages, models

CONFIG_DIR = Path(__file__).resolve().parents[1] / "tc" / "config"


def test_corruption_names_are_the_registry_keys_in_order():
    assert tuple(corruptions.CORRUPTIONS) == vocabulary.CORRUPTION_NAMES
    assert all(len(params) == len(vocabulary.SEVERITIES) for _, params in corruptions.CORRUPTIONS.values())


def test_model_names_are_the_builders_and_each_default_depth_builds():
    assert tuple(models._BUILDERS) == vocabulary.MODELS
    for name in vocabulary.MODELS:
        depth = vocabulary.default_depth(name)
        vocabulary.validate_depth(name, depth)
        net = models.build_model(models.ModelSpec(name, depth, 4, 1, 8, 10))
        assert len(net.stage_cuts) >= 1


def test_core_reexports_the_vocabulary_not_a_copy():
    # one definition: core's names are the config's objects
    assert models.validate_model is vocabulary.validate_model and models.default_depth is vocabulary.default_depth
    assert fx_stages.validate_name is vocabulary.validate_name and fx_stages.split_name is vocabulary.split_name
    assert fx_stages.TORCHVISION == vocabulary.TORCHVISION and fx_stages.FACTORY_RE is vocabulary.FACTORY_RE


@pytest.mark.parametrize(
    ("model", "message"),
    [  # today's messages, word for word (they moved from tc.core.fx_stages and tc.core.models)
        (
            "foo",
            "model='foo' is not valid; use one of resnet20, vgg, mlp, torchvision:<name> (e.g. torchvision:resnet18) "
            "or <module>:<function> (a factory of your own, e.g. mypkg.nets:make_net)",
        ),
        ("resnet20@a", "model='resnet20@a': `@` takes a comma list of module names, for torchvision or own models"),
        ("a.b:c@", "model='a.b:c@': `@` takes a comma list of module names, for torchvision or own models"),
    ],
)
def test_a_bad_model_name_keeps_its_message(model, message):
    with pytest.raises(ValueError) as err:
        vocabulary.validate_model(model)
    assert str(err.value) == message


def test_depth_rules_keep_their_messages():
    cases = {
        ("resnet20", 21): "depth=21 is not valid for resnet20; use 6n+2 with n >= 1 (8, 14, 20, 32, ...)",
        ("vgg", 2): "depth=2 is not valid for vgg; use >= 3 conv layers (one stage needs one)",
        ("mlp", 0): "depth=0 is not valid for mlp; use >= 1 hidden layer",
        ("a.b:c", 3): "depth=3: depth applies to tc's own models (resnet20, vgg, mlp); use 0 for 'a.b:c'",
    }
    for (model, depth), message in cases.items():
        with pytest.raises(ValueError) as err:
            vocabulary.validate_depth(model, depth)
        assert str(err.value) == message


def test_the_model_grammar():
    vocabulary.validate_model("torchvision:resnet18@layer1,layer2")
    vocabulary.validate_model("mypkg.nets:make_net")
    assert vocabulary.split_name("torchvision:resnet18@layer2, layer3") == (
        "torchvision:resnet18",
        ["layer2", "layer3"],
    )
    assert [vocabulary.is_user_model(m) for m in ("mlp", "torchvision:vgg11", "a.b:c@x")] == [False, False, True]
    with pytest.raises(ValueError, match="'nope' is not a torchvision classification model"):
        vocabulary.validate_model("torchvision:nope")


def _tc_imports(path: Path) -> set[str]:
    """Every tc module `path` imports (at any depth of the file, functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "tc" or a.name.startswith("tc.")}
        elif isinstance(node, ast.ImportFrom) and node.module and (node.module + ".").startswith("tc."):
            found.add(node.module)
    return found


def test_the_configs_import_no_other_tc_package():
    for path in sorted(CONFIG_DIR.glob("*.py")):
        outside = {m for m in _tc_imports(path) if not (m + ".").startswith("tc.config.")}
        assert not outside, f"{path.name} imports {outside}: the configs are tc's bottom layer"


def test_importing_the_configs_loads_no_other_tc_package_and_no_torch():
    code = (
        "import sys, tc.config; print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('tc', 'torch'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded and all(m == "tc" or m.startswith("tc.config") for m in loaded), loaded
