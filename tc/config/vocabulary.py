"""The names tc accepts: data sets, models (and the grammar of a model name), corruptions, and the choices of
the configs' string fields.

The configs validate names before anything is built, so they own the names; `tc.core` keys its registries by
them (`tc.core.models` builds the zoo's `MODELS`, `tc.core.corruptions.CORRUPTIONS` holds one function per
`CORRUPTION_NAMES` name, `tc.core.fx_stages` imports a `module:function` factory this grammar admits), and
`tests/test_vocabulary.py` checks that names and registries agree. Checking a name imports nothing it names:
a run's stored config must never import code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

DATASETS = ("fashion-mnist", "mnist", "cifar10", "cifar100", "svhn", "digits")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
BN_MODES = ("splice", "recalibrate")
PRECISIONS = ("fp32", "bf16")
MATRICES = ("full", "final")
SPLITS = ("train", "test", "corrupt")
SEVERITIES = (1, 2, 3, 4, 5)
SAMPLERS = ("qmc", "random", "grid", "tpe")
PRUNERS = ("none", "median")

# CIFAR-10-C-style corruptions of the `corrupt` split, in the order `corruptions=all` lists them
# (`tc.core.corruptions.CORRUPTIONS` holds the function and severity parameters of each).
CORRUPTION_NAMES = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "pixelate",
    "jpeg",
)

# ---------------------------------------------------------------------------------------------- models

# tc's own models (`tc.core.models`) and their default depths: resnet20 counts 6n+2 layers, vgg conv layers,
# mlp hidden layers.
DEFAULT_DEPTH = {"resnet20": 20, "vgg": 6, "mlp": 3}
MODELS = tuple(DEFAULT_DEPTH)

TORCHVISION = "torchvision:"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
FACTORY_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}$")  # module.path:function


def split_name(model: str) -> tuple[str, list[str] | None]:
    """`torchvision:resnet18@layer2,layer3` -> (`torchvision:resnet18`, [`layer2`, `layer3`]); no `@`: None."""
    base, sep, cuts = model.partition("@")
    return base, ([c.strip() for c in cuts.split(",") if c.strip()] if sep else None)


def torchvision_names() -> list[str]:
    """torchvision's classification models (imports torchvision, never a name a user gave)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def validate_name(model: str, zoo: Sequence[str] = MODELS) -> None:
    """Syntax only (imports nothing it names): a zoo name, `torchvision:<classification model>`, or
    `module:function`, the last two optionally with `@cut1,cut2,...` (module names after which to cut)."""
    base, cuts = split_name(model)
    if cuts is not None and (not cuts or base in zoo):
        raise ValueError(f"model={model!r}: `@` takes a comma list of module names, for torchvision or own models")
    if base in zoo:
        return
    if base.startswith(TORCHVISION):
        name = base[len(TORCHVISION) :]
        if name not in torchvision_names():
            raise ValueError(
                f"model={model!r}: {name!r} is not a torchvision classification model; "
                f"valid: {', '.join(torchvision_names())}"
            )
        return
    if not FACTORY_RE.match(base):
        raise ValueError(
            f"model={model!r} is not valid; use one of {', '.join(zoo)}, torchvision:<name> "
            "(e.g. torchvision:resnet18) or <module>:<function> (a factory of your own, e.g. mypkg.nets:make_net)"
        )


def validate_model(model: str) -> None:
    """Check a model name without importing anything it names (`validate_name` with tc's zoo)."""
    validate_name(model, MODELS)


def is_user_model(model: str, zoo: Sequence[str] = MODELS) -> bool:
    """A `module:function` factory: its code is imported only from a name given on the command line."""
    base, _ = split_name(model)
    return base not in zoo and not base.startswith(TORCHVISION)


def default_depth(model: str) -> int:
    """The zoo's default depth; 0 (unused) for torchvision and user models."""
    return DEFAULT_DEPTH.get(model, 0)


def validate_depth(model: str, depth: int) -> None:
    """`depth` must suit `model`: 6n+2 (n >= 1) for resnet20, >= 3 for vgg, >= 1 for mlp, 0 for the others."""
    if model not in MODELS and depth != 0:
        raise ValueError(f"depth={depth}: depth applies to tc's own models ({', '.join(MODELS)}); use 0 for {model!r}")
    if model == "resnet20" and (depth < 8 or (depth - 2) % 6):
        raise ValueError(f"depth={depth} is not valid for resnet20; use 6n+2 with n >= 1 (8, 14, 20, 32, ...)")
    if model == "vgg" and depth < 3:
        raise ValueError(f"depth={depth} is not valid for vgg; use >= 3 conv layers (one stage needs one)")
    if model == "mlp" and depth < 1:
        raise ValueError(f"depth={depth} is not valid for mlp; use >= 1 hidden layer")
