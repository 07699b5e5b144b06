"""torchvision and user models cut at their stages (tc.core.fx_stages): composites equal the full forward at every
cut, splices equal shallow-of-one + deep-of-other, non-bottleneck cuts and bad names are refused."""

import copy
import sys

import pytest
import torch
import torchvision

from tc.config import AnalyzeConfig, TrainConfig
from tc.core.compose import ComposeOptions, composite_outputs, composite_outputs_naive, splice
from tc.core.fx_stages import block_state_dict, import_factory
from tc.core.models import ModelSpec, build_model, factory_for
from tests import stage_models

USER = "tests.stage_models:small_net"
SHAPE = (3, 32, 10)  # in_channels, image_size, num_classes


def _original(model: str, in_channels=3, num_classes=10) -> torch.nn.Module:
    if model.startswith("torchvision:"):
        return torchvision.models.get_model(model.split(":")[1], weights=None, num_classes=num_classes)
    return stage_models.small_net(num_classes, in_channels)


_CACHE: dict = {}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors on a shared machine: one thread avoids oversubscription (10x faster forwards here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(model: str):
    """(staged model, original model) with the same weights, both in eval mode."""
    if model not in _CACHE:
        torch.manual_seed(0)
        factory = import_factory(model) if model == USER else None
        staged = build_model(ModelSpec(model, 0, 16, *SHAPE), factory)
        torch.manual_seed(1)
        original = _original(model)
        staged.load_state_dict(block_state_dict(staged.blocks, original.state_dict()))
        _CACHE[model] = (staged.eval(), original.eval())
    return _CACHE[model]


@pytest.mark.parametrize("model", ["torchvision:resnet18", "torchvision:mobilenet_v3_small", USER])
def test_composites_equal_the_original_forward_at_every_cut(model):
    staged, original = _pair(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = original(x)
        assert torch.equal(staged(x), full)
        for cut in staged.cuts:
            z = staged.forward_blocks(x, 0, cut)
            diff = (staged.forward_blocks(z, cut) - full).abs().max().item()
            assert diff <= 1e-6, f"{model} cut {cut}: {diff}"
    assert set(staged.stage_cuts) <= set(staged.cuts)
    assert staged.block_names[0] == "stem" and staged.block_names[-1] == "head"


def test_auto_cuts_are_the_stage_boundaries():
    resnet, _ = _pair("torchvision:resnet18")
    assert resnet.block_names == ["stem", *[f"layer{i}_{j}" for i in range(1, 5) for j in (0, 1)], "head"]
    assert resnet.stage_cuts == [1, 3, 5, 7, 9]  # after the stem, after layer1 .. layer4
    mobile, _ = _pair("torchvision:mobilenet_v3_small")
    assert mobile.block_names == ["stem", *[f"features_{i}" for i in range(1, 13)], "head"]
    user, _ = _pair(USER)
    # the top-level relu and torch.flatten of SmallNet.forward are inside the blocks, not lost between them
    assert user.block_names == ["stem", "body_0", "body_1", "body_2", "head"]
    assert user.stage_cuts == [1, 2, 4]  # body_1 downsamples and widens: a new stage


def test_splice_equals_shallow_of_one_and_deep_of_the_other():
    model, _ = _pair("torchvision:resnet18")
    a = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    b = {k: (v + 0.1 * torch.randn(v.shape, generator=g).abs() if v.is_floating_point() else v) for k, v in a.items()}
    x = torch.randn(2, 3, 32, 32, generator=g)
    ma, mb = copy.deepcopy(model), copy.deepcopy(model)
    ma.load_state_dict(a)
    mb.load_state_dict(b)
    with torch.no_grad():
        for cut in (1, 4, 9):
            spliced = copy.deepcopy(model)
            spliced.load_state_dict(splice(model, a, b, cut))
            expected = mb.forward_blocks(ma.forward_blocks(x, 0, cut), cut)
            assert torch.equal(spliced.eval()(x), expected), f"cut {cut}"
            assert not torch.equal(expected, ma(x)) and not torch.equal(expected, mb(x))


def test_fast_composites_agree_with_the_naive_ones_on_resnet18():
    model, _ = _pair("torchvision:resnet18")
    a = model.state_dict()
    g = torch.Generator().manual_seed(4)
    b = {k: (v * (1 + 0.2 * torch.rand(v.shape, generator=g)) if v.is_floating_point() else v) for k, v in a.items()}
    x, y = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([0, 3, 7])
    fast = composite_outputs(model, [a, b], [a, b], (x, y), [3, 7], ComposeOptions(columns=[1]))
    naive = composite_outputs_naive(model, [a, b], [a, b], (x, y), [3, 7], ComposeOptions(columns=[1]))
    for cut in (3, 7):
        assert fast[cut].done[:, 1].all() and torch.equal(fast[cut].done, naive[cut].done)
        assert torch.equal(fast[cut].pred, naive[cut].pred)
        assert torch.allclose(fast[cut].nll[:, 1], naive[cut].nll[:, 1], atol=1e-5, rtol=1e-5)


def test_grey_images_repeat_their_channel_into_a_torchvision_model():
    torch.manual_seed(0)
    model = build_model(ModelSpec("torchvision:resnet18@layer2,layer4", 0, 16, 1, 8, 10)).eval()
    torch.manual_seed(0)
    original = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), original(x.expand(-1, 3, -1, -1)))
    assert model.block_names == ["layer2", "layer4", "head"]


def test_a_skip_across_a_requested_cut_is_refused():
    spec = ModelSpec("tests.stage_models:skip_net@b", 0, 16, 3, 8, 10)
    with pytest.raises(ValueError, match=r"cut after 'b' is not a bottleneck: 2 values cross it \(.*\ba\b"):
        build_model(spec, stage_models.skip_net)
    # automatic cuts drop the candidates inside the skip; the rest recompose exactly
    model = build_model(ModelSpec("tests.stage_models:skip_net", 0, 16, 3, 8, 10), stage_models.skip_net).eval()
    assert model.block_names == ["stem", "b", "head"]  # `a` | `b`, `c`, the sum and the pool | the rest
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.forward_blocks(model.forward_blocks(x, 0, 1), 1), model(x))


def test_a_module_used_on_both_sides_of_a_cut_is_refused():
    with pytest.raises(ValueError, match=r"'a.weight' is used by blocks 'b' and 'head'"):
        build_model(ModelSpec("tests.stage_models:TiedNet@b", 0, 16, 3, 8, 10), stage_models.TiedNet)
    # automatically, no cut falls between the two uses of `a`: both and `b` are one block
    model = build_model(ModelSpec("tests.stage_models:TiedNet", 0, 16, 3, 8, 10), stage_models.TiedNet).eval()
    assert model.block_names == ["stem", "a", "head"]
    assert [n.target for n in model.blocks["a"].graph.nodes if n.op == "call_module"] == ["a", "b", "a", "head.0"]


@pytest.mark.parametrize(
    "name,message",
    [
        ("torchvision:resnet_nope", "not a torchvision classification model"),
        ("bad name!", "is not valid"),
        ("resnet20@layer1", "@"),
    ],
)
def test_bad_model_names_are_a_clear_value_error(name, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(model=name)
    with pytest.raises(ValueError, match=message):
        build_model(ModelSpec(name, 0, 16, 3, 32, 10))


@pytest.mark.parametrize(
    "name,message",
    [
        ("tc_no_such_module_xyz:make", "cannot import module 'tc_no_such_module_xyz'"),
        ("tests.stage_models:nope", "has no function 'nope'"),
        ("tests.stage_models:NOT_A_FACTORY", "has no function 'NOT_A_FACTORY'"),
        ("tests.stage_models", "<module>:<function>"),
    ],
)
def test_a_bad_factory_is_a_clear_value_error(name, message):
    with pytest.raises(ValueError, match=message):
        import_factory(name)


def test_a_user_model_is_imported_only_from_the_command_line():
    name = "tests.tc_never_imported_xyz:make"
    TrainConfig(model=name)  # a stored run config is validated without importing its model
    AnalyzeConfig(run_id="r", model=name)
    assert "tests.tc_never_imported_xyz" not in sys.modules
    with pytest.raises(ValueError, match="command line"):
        build_model(ModelSpec(name, 0, 16, 3, 32, 10))
    with pytest.raises(ValueError, match="command line"):
        factory_for(name, None)
    assert "tests.tc_never_imported_xyz" not in sys.modules
    with pytest.raises(ValueError, match="differs from the run's model"):
        factory_for(USER, "tests.stage_models:skip_net")
    assert factory_for(USER, USER) is stage_models.small_net
    assert factory_for("torchvision:resnet18", None) is None
    with pytest.raises(ValueError, match="depth applies to tc's own models"):
        TrainConfig(model="torchvision:resnet18", depth=18)


@pytest.mark.slow
def test_train_and_analyze_a_user_model_through_the_entry_points(mlflow_store):
    """Train SmallNet on digits, then analyze it (5 s alone here, minutes on a loaded machine); without
    `--model` analyze refuses."""
    from mlflow.tracking import MlflowClient

    from entrypoints import analyze as analyze_ep
    from entrypoints import train as train_ep

    train = ["--dataset", "digits", "--model", USER, "--epochs", "2", "--train_size", "256", "--batch_size", "64"]
    assert train_ep.main(train) == 0
    run_id = MlflowClient().search_runs(["0"], order_by=["attribute.start_time DESC"])[0].info.run_id
    args = ["--run_id", run_id, "--max_samples", "64", "--splits", "test", "--matrix", "final", "--anisotropy", "false"]
    assert analyze_ep.main(args) == 2  # refused (exit 2): the run names a factory, tc does not import it on its word
    assert analyze_ep.main([*args, "--measures", "false", "--model", USER]) == 0
    metrics = MlflowClient().get_run(run_id).data.metrics
    assert {"tc_test_d1", "tc_test_d2", "tc_test_d4", "tc_test"} <= set(metrics)
