"""Networks built as an ordered list of named blocks, so that the cut between blocks is part of the API.

Every model is a `BlockNet`: blocks named `stem`, `block1` .. `blockK`, `head`, run in that order. A *cut*
`d` (1 <= d < number of blocks) splits the network after its first `d` blocks:
`f = f_[d+1:n] ∘ f_[1:d]` (SPEC section 1). `stage_cuts` are the headline cuts (stage boundaries).
Parameters and buffers live under `blocks.<name>.`, so a checkpoint's state dict splits by block name.

Besides tc's zoo (`resnet20`, `vgg`, `mlp`), `model` may name a torchvision classifier (`torchvision:resnet18`,
built with `weights=None`) or a user's own factory (`mypkg.nets:make_net`), optionally with explicit cuts
(`torchvision:resnet18@layer1,layer2,layer3`); `tc.core.fx_stages` traces and cuts them into the same `BlockNet`.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from tc.config.vocabulary import (  # noqa: F401  (re-exported: the model names' checks)
    default_depth,
    is_user_model,
    validate_depth,
    validate_model,
)
from tc.core import fx_stages as stages


@dataclass(frozen=True)
class ModelSpec:
    """All that is needed to rebuild a model; stored (as builtins) in every checkpoint.

    Example:

    >>> import tc
    >>> data = tc.load_data("digits", train_size=64)
    >>> tc.ModelSpec.of(tc.TrainConfig(dataset="digits", model="mlp", width=16), data)
    ModelSpec(model='mlp', depth=3, width=16, in_channels=1, image_size=8, num_classes=10)
    """

    model: str
    depth: int
    width: int
    in_channels: int
    image_size: int
    num_classes: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def of(cls, cfg, data) -> ModelSpec:
        """The architecture that training config `cfg` gives on data set `data` (a `tc.core.data.DataBundle`)."""
        return cls(cfg.model, cfg.depth, cfg.width, data.in_channels, data.image_size, data.num_classes)


class BlockNet(nn.Module):
    """A sequence of named blocks. `forward_blocks(x, a, b)` runs blocks a..b-1 (0-based)."""

    def __init__(self, blocks: OrderedDict[str, nn.Module], stage_cuts: list[int], spec: ModelSpec):
        super().__init__()
        self.blocks = nn.ModuleDict(blocks)
        self.stage_cuts = list(stage_cuts)
        self.spec = spec

    @property
    def block_names(self) -> list[str]:
        return list(self.blocks.keys())

    @property
    def cuts(self) -> list[int]:
        """Every block boundary: cut d keeps blocks [0, d) in the shallow part."""
        return list(range(1, len(self.blocks)))

    def forward_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in list(self.blocks.values())[start:stop]:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(x)

    def block_of(self, state_key: str) -> str:
        """Name of the block that owns a state-dict key such as `blocks.block3.conv1.weight`."""
        prefix, name, _ = state_key.split(".", 2)
        if prefix != "blocks" or name not in self.blocks:
            raise KeyError(f"{state_key!r} belongs to no block")
        return name


def conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class BasicBlock(nn.Module):
    """He et al. (2016) basic residual block; a 1x1 projection when shape changes (option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _head(c_in: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))


def _resnet(spec: ModelSpec) -> BlockNet:
    n = (spec.depth - 2) // 6
    w = spec.width
    blocks: OrderedDict[str, nn.Module] = OrderedDict(stem=conv_bn(spec.in_channels, w))
    c_in, k = w, 0
    for stage, c_out in enumerate((w, 2 * w, 4 * w)):
        for i in range(n):
            k += 1
            blocks[f"block{k}"] = BasicBlock(c_in, c_out, stride=2 if (stage > 0 and i == 0) else 1)
            c_in = c_out
    blocks["head"] = _head(c_in, spec.num_classes)
    return BlockNet(blocks, stage_cuts=[1, 1 + n, 1 + 2 * n, 1 + 3 * n], spec=spec)


def _vgg(spec: ModelSpec) -> BlockNet:
    """Conv-BN-ReLU layers in three stages of widths w, 2w, 4w; 2x2 max-pool after each stage while the
    feature map is at least 2 pixels wide. The first layer is the stem."""
    per_stage = [spec.depth // 3 + (1 if s < spec.depth % 3 else 0) for s in range(3)]
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    c_in, size, k, stage_cuts = spec.in_channels, spec.image_size, 0, []
    for stage, count in enumerate(per_stage):
        c_out = spec.width * 2**stage
        for i in range(count):
            layer = conv_bn(c_in, c_out)
            if i == count - 1 and size >= 2:
                layer.append(nn.MaxPool2d(2))
                size //= 2
            blocks["stem" if k == 0 else f"block{k}"] = layer
            c_in, k = c_out, k + 1
        stage_cuts.append(k)
    blocks["head"] = _head(c_in, spec.num_classes)
    return BlockNet(blocks, stage_cuts=stage_cuts, spec=spec)


def _mlp(spec: ModelSpec) -> BlockNet:
    d_in = spec.in_channels * spec.image_size**2
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        stem=nn.Sequential(nn.Flatten(), nn.Linear(d_in, spec.width), nn.ReLU())
    )
    for k in range(1, spec.depth):
        blocks[f"block{k}"] = nn.Sequential(nn.Linear(spec.width, spec.width), nn.ReLU())
    blocks["head"] = nn.Linear(spec.width, spec.num_classes)
    return BlockNet(blocks, stage_cuts=list(range(1, spec.depth + 1)), spec=spec)


_BUILDERS = {"resnet20": _resnet, "vgg": _vgg, "mlp": _mlp}


def _staged(spec: ModelSpec, factory: Callable[..., nn.Module] | None) -> BlockNet:
    base, cuts = stages.split_name(spec.model)
    expand_to = 0
    if base.startswith(stages.TORCHVISION):
        module = stages.torchvision_module(base[len(stages.TORCHVISION) :], spec.num_classes)
        if spec.in_channels == 1:
            expand_to = 3  # torchvision classifiers take RGB: grey images repeat their channel
        elif spec.in_channels != 3:
            raise ValueError(f"{spec.model} takes 1- or 3-channel images, not {spec.in_channels}")
    else:
        if factory is None:
            raise ValueError(
                f"model {spec.model!r} is a user factory; tc imports code only from a name given on the command "
                f"line, never from a run: pass it again (analyze: -P model={spec.model})"
            )
        module = stages.call_factory(factory, spec.num_classes, spec.in_channels, spec.image_size)
    blocks, stage_cuts = stages.stage_blocks(
        module, spec.in_channels, spec.image_size, cuts, name=spec.model, expand_to=expand_to
    )
    model = BlockNet(blocks, stage_cuts, spec)
    x = torch.zeros(2, spec.in_channels, spec.image_size, spec.image_size)
    try:
        with torch.no_grad():  # the logits must be [N, num_classes]: catch a factory that ignores num_classes
            shape = model.eval()(x).shape
    except Exception as e:
        raise ValueError(f"{spec.model}: forward fails on a {list(x.shape)} input ({type(e).__name__}: {e})") from e
    if tuple(shape) != (2, spec.num_classes):
        raise ValueError(f"{spec.model}: output shape {tuple(shape)} for 2 inputs; expected (2, {spec.num_classes})")
    return model.train()


def at_state(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `model` holding `state_dict`, in eval mode (the one way tc loads a checkpoint into a model:
    the template `model` is never modified)."""
    m = copy.deepcopy(model)
    m.load_state_dict(state_dict)
    return m.eval()


def build_model(spec: ModelSpec, factory: Callable[..., nn.Module] | None = None) -> BlockNet:
    """Build an untrained model. Initialisation uses torch's global RNG: seed it first.

    `factory`: for a user model (`module:function`), the function, which the caller imported with
    `tc.core.fx_stages.import_factory` from a name given on the command line (see `factory_for`).

    Example:

    >>> import torch, tc
    >>> _ = torch.manual_seed(0)
    >>> model = tc.build_model(tc.ModelSpec("mlp", 3, 16, in_channels=1, image_size=8, num_classes=10))
    >>> list(model.blocks), model.cuts
    (['stem', 'block1', 'block2', 'head'], [1, 2, 3])
    >>> tuple(model(torch.zeros(2, 1, 8, 8)).shape)
    (2, 10)
    """
    validate_model(spec.model)
    validate_depth(spec.model, spec.depth)
    if spec.model in _BUILDERS:
        return _BUILDERS[spec.model](spec)
    return _staged(spec, factory)


def factory_for(run_model: str, command_line_model: str | None) -> Callable[..., nn.Module] | None:
    """The factory to build a run's model with: None for zoo and torchvision models; for a user model, the
    function named on the command line, which must be the run's model (its code is never taken from a run)."""
    if not is_user_model(run_model):
        return None
    if not command_line_model:
        raise ValueError(
            f"the run's model is {run_model!r}, a user factory: tc imports code only from names given on the "
            f"command line; pass -P model={run_model} if you trust that code"
        )
    if stages.split_name(command_line_model)[0] != stages.split_name(run_model)[0]:
        raise ValueError(f"model={command_line_model!r} differs from the run's model {run_model!r}")
    return stages.import_factory(command_line_model)
