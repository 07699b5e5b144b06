import pytest
import torch

from tc.core.models import ModelSpec, build_model

SHAPES = [(1, 28, 10), (3, 32, 100), (1, 8, 10)]  # (channels, size, classes): fashion/mnist, cifar100, digits


def _model(name, depth, c, size, k):
    torch.manual_seed(0)
    return build_model(ModelSpec(name, depth, 4, c, size, k)).eval()


@pytest.mark.parametrize("name,depth", [("resnet20", 8), ("resnet20", 20), ("vgg", 5), ("mlp", 3)])
@pytest.mark.parametrize("c,size,k", SHAPES)
def test_split_at_every_cut_and_recompose_gives_identical_logits(name, depth, c, size, k):
    model = _model(name, depth, c, size, k)
    x = torch.randn(3, c, size, size)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (3, k)
        for cut in model.cuts:
            z = model.forward_blocks(x, 0, cut)
            assert torch.equal(model.forward_blocks(z, cut), logits), f"cut {cut}"


@pytest.mark.parametrize("name,depth", [("resnet20", 14), ("vgg", 6), ("mlp", 2)])
def test_every_parameter_and_buffer_belongs_to_exactly_one_block(name, depth):
    model = _model(name, depth, 3, 32, 10)
    owners = {}
    for block_name, block in model.blocks.items():
        for key in block.state_dict():
            owners.setdefault(f"blocks.{block_name}.{key}", []).append(block_name)
    keys = set(model.state_dict())
    assert keys == set(owners)
    assert all(len(v) == 1 for v in owners.values())
    assert all(model.block_of(key) == owners[key][0] for key in keys)


def test_resnet20_has_the_cuts_the_spec_names():
    model = _model("resnet20", 20, 3, 32, 10)
    assert model.block_names == ["stem", *[f"block{i}" for i in range(1, 10)], "head"]
    assert model.cuts == list(range(1, 11))  # after the stem and after each of the 9 residual blocks
    assert model.stage_cuts == [1, 4, 7, 10]
    n_params = sum(p.numel() for p in build_model(ModelSpec("resnet20", 20, 16, 3, 32, 10)).parameters())
    assert 0.26e6 < n_params < 0.29e6  # He et al. report 0.27M for CIFAR ResNet-20


def test_stage_cuts_are_cuts():
    for name, depth in [("resnet20", 32), ("vgg", 7), ("mlp", 4)]:
        model = _model(name, depth, 1, 28, 10)
        assert set(model.stage_cuts) <= set(model.cuts)


@pytest.mark.parametrize("name,depth", [("resnet20", 21), ("resnet20", 2), ("vgg", 2), ("mlp", 0)])
def test_invalid_depth_is_rejected(name, depth):
    with pytest.raises(ValueError, match="depth"):
        build_model(ModelSpec(name, depth, 4, 1, 28, 10))


def test_torchvision_and_user_models_take_no_depth():
    from tc.config import TrainConfig
    from tc.core.models import default_depth, validate_depth

    assert default_depth("torchvision:resnet18") == 0 and default_depth("mypkg.nets:make") == 0
    assert TrainConfig(model="torchvision:resnet18").depth == 0
    validate_depth("mypkg.nets:make", 0)
    with pytest.raises(ValueError, match="depth applies to tc's own models"):
        validate_depth("torchvision:resnet18", 18)
