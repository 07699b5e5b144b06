"""Any sequential-by-stage model as a `BlockNet`: torchvision classifiers by name, or a user's own factory.

A model is traced with `torch.fx` (torch.nn layers and torchvision's StochasticDepth as leaves), in train and
in eval mode, which must give the same graph; the graph is cut into consecutive pieces, each an
`fx.GraphModule` that keeps the original submodule paths, so the blocks run exactly the ops of the original
forward, functional ones (`torch.flatten`, `x + identity`) included, in the same order.

A cut is a *bottleneck* when exactly one value crosses it: the features `z` of `f = f_deep ∘ f_shallow`.
Cutting where a second value crosses (a skip connection, the input reused later, a parameter used on both
sides) would leave the deep part without its inputs; such a cut is refused with a `ValueError` naming the
cut and the crossing values.

Automatic cuts: the candidate units are the top-level children, with plain `nn.Sequential`/`nn.ModuleList`
containers expanded one level (ResNet `layer1.0`, MobileNet `features.3`); a candidate that is not a
bottleneck is dropped. Units without a convolution or linear layer of their own (norms, activations, pooling,
dropout) join the block before them.
Blocks: `stem` (the top-level units before the first container unit, else the first unit), one block per
body unit, and `head` (from the first block whose output is not a 4-D feature map; the last block for a
model without one). Stage cuts: after the stem, before the head, and before every body block that changes
the shape (C, H, W) of its input (a new stage starts where a block downsamples or widens; a pooling merged
into a block does not count).
Explicit cuts: a list of module names; the cut is after that module's last op, and every one must be a
bottleneck. Blocks are then named after the module they end with (the last one `head`).

Code is imported only by `import_factory`, from a name the caller passes; tc calls it only with names given
on the command line, never with names read from a run or an artifact.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import fx, nn

# The grammar of a model name belongs to the configs, which check it before anything is built; re-exported here
# for the code that builds what a name names.
from tc.config.vocabulary import (  # noqa: F401  (validate_name, is_user_model: re-exported)
    FACTORY_RE,
    TORCHVISION,
    is_user_model,
    split_name,
    torchvision_names,
    validate_name,
)

_CONTAINERS = (nn.Sequential, nn.ModuleList)


def import_factory(model: str) -> Callable[..., nn.Module]:
    """Import `module:function` (the part before any `@`). Call it only with a name the user typed."""
    base, _ = split_name(model)
    if not FACTORY_RE.match(base):
        raise ValueError(f"model={model!r} is not of the form <module>:<function>")
    module_name, func_name = base.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"model={model!r}: cannot import module {module_name!r} ({e}); is it on PYTHONPATH?") from e
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ValueError(f"model={model!r}: module {module_name!r} has no function {func_name!r}")
    return func


def call_factory(factory: Callable[..., nn.Module], num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Call a user factory with those of `num_classes`, `in_channels`, `image_size` that it accepts."""
    offered = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in params}
    module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise ValueError(f"model factory {factory.__name__} returned {type(module).__name__}, not a torch nn.Module")
    return module


def torchvision_module(name: str, num_classes: int) -> nn.Module:
    """A torchvision classifier, randomly initialised (`weights=None`: nothing is downloaded)."""
    import torchvision

    if name not in torchvision_names():
        raise ValueError(f"{name!r} is not a torchvision classification model; valid: {', '.join(torchvision_names())}")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------- tracing


def _paths(node: fx.Node) -> list[str]:
    """Module paths (outermost first) that `node` was traced inside; `layer1.0.relu@1` -> `layer1.0.relu`."""
    stack = node.meta.get("nn_module_stack", {})
    out = []
    for key, value in stack.items():
        path = value[0] if isinstance(value, tuple) and isinstance(value[0], str) else key
        out.append(re.sub(r"@\d+$", "", path))
    if node.op in ("call_module", "get_attr"):
        out.append(str(node.target))
    return out


def _within(path: str, unit: str) -> bool:
    return path == unit or path.startswith(unit + ".")


class _Tracer(fx.Tracer):
    """torch.nn layers are leaves (fx's default); so is torchvision's StochasticDepth, whose forward branches
    on `self.training` and would otherwise be traced into one mode's graph."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__name__ == "StochasticDepth" or super().is_leaf_module(m, qualname)


def _trace(module: nn.Module, name: str) -> fx.GraphModule:
    """Trace in eval and in train mode; refuse a forward whose graph depends on the mode (it would be
    frozen in one of them)."""
    was_training = module.training
    codes = []
    try:
        for mode in (False, True):
            module.train(mode)
            graph = _Tracer().trace(module)
            gm = fx.GraphModule(module, graph, module.__class__.__name__)
            codes.append(gm.code)
    except Exception as e:  # fx raises TraceError, TypeError, ...: all mean "not a static graph"
        raise ValueError(f"{name}: torch.fx cannot trace its forward ({type(e).__name__}: {e})") from e
    finally:
        module.train(was_training)
    if codes[0] != codes[1]:
        raise ValueError(f"{name}: its forward differs between train and eval mode; tc cannot cut it")
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"{name}: forward takes {len(placeholders)} inputs; tc needs exactly one (the images)")
    return gm


def _auto_units(module: nn.Module) -> list[tuple[str, bool]]:
    """(path, from_container) of the candidate units: top-level children, containers expanded."""
    out: list[tuple[str, bool]] = []

    for name, child in module.named_children():
        if type(child) in _CONTAINERS and len(child) > 0:  # one level: ResNet layer1.0, MobileNet features.3
            out += [(f"{name}.{sub}", True) for sub, _ in child.named_children()]
        else:
            out.append((name, False))
    return out


class _Graph:
    """The traced graph as a list, with the checks and the slicing the cuts need."""

    def __init__(self, gm: fx.GraphModule, name: str):
        self.gm, self.name = gm, name
        self.nodes = [n for n in gm.graph.nodes if n.op != "output"]
        self.pos = {n: i for i, n in enumerate(self.nodes)}
        (self.output,) = [n for n in gm.graph.nodes if n.op == "output"]
        self.paths = [_paths(n) for n in self.nodes]

    def last_index(self, unit: str) -> int | None:
        hits = [i for i, ps in enumerate(self.paths) if any(_within(p, unit) for p in ps)]
        return max(hits) if hits else None

    def first_index(self, unit: str) -> int | None:
        hits = [i for i, ps in enumerate(self.paths) if any(_within(p, unit) for p in ps)]
        return min(hits) if hits else None

    def crossing(self, p: int) -> list[fx.Node]:
        """Values computed at positions <= p and used after p (the output node counts as 'after')."""
        return [n for n in self.nodes[: p + 1] if any(u.op == "output" or self.pos[u] > p for u in n.users)]

    def check_cut(self, p: int, label: str) -> fx.Node:
        cross = self.crossing(p)
        if len(cross) != 1:
            names = ", ".join(f"{n.name} ({n.op} {n.target})" for n in cross)
            raise ValueError(
                f"{self.name}: the cut after {label!r} is not a bottleneck: {len(cross)} values cross it "
                f"({names}); a skip connection or a value reused later cannot be split"
            )
        return cross[0]

    def piece(self, start: int, stop: int, source: fx.Node, result: fx.Node, expand_to: int = 0) -> fx.GraphModule:
        """The nodes in [start, stop) as a one-input, one-output module fed by `source`'s value."""
        g = fx.Graph()
        x = g.placeholder("x")
        if expand_to:  # grey images into a 3-channel network: repeat the channel (parameter-free)
            x = g.call_method("expand", (x, -1, expand_to, -1, -1))
        env = {source: x}
        for n in self.nodes[start:stop]:
            if n.op != "placeholder":
                env[n] = g.node_copy(n, lambda a: env[a])
        g.output(env[result])
        return fx.GraphModule(self.gm, g)


def _finish(module: nn.Module, pieces: list[tuple[str, fx.GraphModule]], name: str) -> OrderedDict[str, nn.Module]:
    """Unique block names, the ownership check, and train mode (the shape pass left modules in eval)."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for label, m in pieces:
        unique, k = label, 1
        while unique in blocks or any(unique == other for other, _ in pieces[len(blocks) + 1 :]):
            k += 1
            unique = f"{label}_{k}"
        blocks[unique] = m
    _owner_check(blocks, name)
    module.train()
    for m in blocks.values():
        m.train()
    return blocks


def _owner_check(blocks: OrderedDict[str, nn.Module], name: str) -> None:
    """A parameter or buffer that two blocks share cannot be spliced by block: refuse it."""
    seen: dict[int, str] = {}
    for block_name, block in blocks.items():
        for key, t in [*block.named_parameters(), *block.named_buffers()]:
            if id(t) in seen and seen[id(t)] != block_name:
                raise ValueError(
                    f"{name}: {key!r} is used by blocks {seen[id(t)]!r} and {block_name!r}; cannot cut there"
                )
            seen[id(t)] = block_name


def stage_blocks(
    module: nn.Module,
    in_channels: int,
    image_size: int,
    cuts: Sequence[str] | None = None,
    *,
    name: str = "model",
    expand_to: int = 0,
) -> tuple[OrderedDict[str, nn.Module], list[int]]:
    """Cut `module` into blocks (see the module docstring) -> (blocks, stage_cuts). `expand_to`: repeat a
    1-channel input to this many channels first (torchvision models take 3)."""
    graph = _Graph(_trace(module, name), name)
    if cuts is not None:
        known = dict(module.named_modules())
        ends = []
        for c in cuts:
            if c not in known or c == "":
                raise ValueError(f"{name}: no module named {c!r} to cut after")
            p = graph.last_index(c)
            if p is None:
                raise ValueError(f"{name}: module {c!r} is not used by forward")
            if p == len(graph.nodes) - 1:
                raise ValueError(f"{name}: module {c!r} ends the forward; there is nothing after it to cut off")
            graph.check_cut(p, c)
            ends.append((p, c.replace(".", "_")))
        ends = [*sorted(set(ends)), (len(graph.nodes) - 1, "head")]
        blocks = _finish(module, _slice(graph, ends, expand_to), name)
        return blocks, list(range(1, len(blocks)))
    return _auto(module, graph, in_channels, image_size, name, expand_to)


def _slice(graph: _Graph, ends: list[tuple[int, str]], expand_to: int) -> list[tuple[str, fx.GraphModule]]:
    """(label, GraphModule) for consecutive pieces ending at each (position, label); the last is the output."""
    out, start, source = [], 0, graph.nodes[0]
    for k, (p, label) in enumerate(ends):
        last = k == len(ends) - 1
        result = graph.output.args[0] if last else graph.check_cut(p, label)
        out.append((label, graph.piece(start, p + 1, source, result, expand_to if k == 0 else 0)))
        start, source = p + 1, result
    return out


def _opens_block(piece: fx.GraphModule) -> bool:
    """A piece starts a block when it runs a convolution, a linear layer, or a stateful module of a model's
    own (a residual block, an inverted-residual block); norms, activations, pools and dropout do not."""
    for node in piece.graph.nodes:
        if node.op == "call_module":
            m = piece.get_submodule(node.target)
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                return True
            if not type(m).__module__.startswith("torch.nn") and _stateful(m):
                return True
    return False


def _stateful(module: nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _auto(module, graph, in_channels, image_size, name, expand_to):
    """Automatic cuts and the stem / body / head grouping (module docstring)."""
    found = [(graph.last_index(path), path, inside) for path, inside in _auto_units(module)]
    units = sorted((p, path, inside) for p, path, inside in found if p is not None)
    spans = [(graph.first_index(path), p) for p, path, _ in units if _stateful(module.get_submodule(path))]
    last_node = len(graph.nodes) - 1
    kept = []
    for p, _, _ in units:
        if p == last_node or (kept and kept[-1] >= p):
            continue
        # a bottleneck, and not inside a stateful module that is also used after it
        if len(graph.crossing(p)) == 1 and not any(lo <= p < hi for lo, hi in spans):
            kept.append(p)
    ends, inside_flags, start = [], [], 0  # a piece is named after the first unit it runs
    for p in kept:
        path, inside = next(
            ((u, i) for k in range(start, p + 1) for _, u, i in units if any(_within(q, u) for q in graph.paths[k])),
            (units[0][1], False),
        )
        ends.append((p, path.replace(".", "_")))
        inside_flags.append(inside)
        start = p + 1
    ends.append((last_node, "head"))
    inside_flags.append(True)
    pieces = _slice(graph, ends, expand_to)
    # each piece's input and output shape on a tiny input, and whether it holds any state
    x = torch.zeros(2, in_channels, image_size, image_size)
    shapes = []
    with torch.no_grad():
        for _, m in pieces:
            m.eval()
            try:
                y = m(x)
            except Exception as e:  # e.g. a model that takes only one image size (ViT: 224)
                shape = [2, in_channels, image_size, image_size]
                raise ValueError(f"{name}: forward fails on a {shape} input ({type(e).__name__}: {e})") from e
            if not isinstance(y, torch.Tensor):
                raise ValueError(f"{name}: a block returns {type(y).__name__}; tc needs tensors between blocks")
            shapes.append((tuple(x.shape[1:]), tuple(y.shape[1:])))
            x = y
    n = len(pieces)
    if n == 1:
        raise ValueError(f"{name}: no top-level module boundary is a bottleneck; name the cuts (model=...@a,b)")
    # the head starts at the first piece whose output is no longer a feature map [C, H, W] (for a model
    # without feature maps, at the last piece)
    head_start = n - 1
    if len(shapes[0][1]) >= 3:
        head_start = next((k for k in range(1, n) if len(shapes[k][1]) < 3), n - 1)
    # pieces [0, stem_end] form the stem: the top-level units before a body of containers (ResNet's conv1 ..
    # maxpool before layer1); without containers in the body, the first piece
    containers = any(inside_flags[k] and _opens_block(pieces[k][1]) for k in range(1, head_start))
    stem_end = 0
    while containers and stem_end + 1 < head_start and not inside_flags[stem_end + 1]:
        stem_end += 1
    groups: list[list[int]] = [list(range(stem_end + 1))]
    for k in range(stem_end + 1, head_start):
        if _opens_block(pieces[k][1]):
            groups.append([k])
        else:  # a normalization, activation or pooling of the block before it
            groups[-1].append(k)
    groups.append(list(range(head_start, n)))
    labels = ["stem"] + [pieces[g[0]][0] for g in groups[1:-1]] + ["head"]
    ends = [(ends[g[-1]][0], label) for g, label in zip(groups, labels, strict=True)]
    blocks = _finish(module, _slice(graph, ends, expand_to), name)
    stage_cuts = [
        b
        for b in range(1, len(groups))
        if b == 1 or b == len(groups) - 1 or shapes[groups[b][0]][0] != shapes[groups[b][0]][1]
    ]
    return blocks, stage_cuts


def block_state_dict(blocks: nn.ModuleDict, original: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original model's state dict (keys such as `layer1.0.conv1.weight`) under the staged model's keys
    (`blocks.layer1_0.layer1.0.conv1.weight`): each block keeps the original paths of the modules it runs.
    Keys that no block holds (a module the forward never uses) are an error."""
    owner = {key: name for name, block in blocks.items() for key in block.state_dict()}
    missing = sorted(set(original) - set(owner))
    if missing:
        raise ValueError(f"{len(missing)} keys belong to no block (unused by forward?): {missing[:5]}")
    return {f"blocks.{owner[k]}.{k}": v for k, v in original.items()}
