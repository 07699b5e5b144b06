"""`device` reaches every part of an analysis (issue 19 item 8), checked on a CPU-only machine.

`FakeAccelerator` stands in for a GPU: the resolved device is `torch.device("meta")`, but the data stays on
the CPU, so every number is computed as usual. What moved to the device is recorded on the tensors'
storages (a model moved with `.to(device)`, an input moved with `.to(device)`, anything computed from
them), `.device` of such a tensor answers the fake device, and `.cpu()` gives an unmarked copy. It records
what a real accelerator would refuse: an operation mixing tensors on and off the device, and `.numpy()` of a
device tensor; and, for every convolution, linear map, BatchNorm and pairwise distance, whether it ran on
the device; and any random draw aimed at the device (seeded draws stay on the CPU, whose generator a GPU's
does not reproduce). An analysis that honours `device` runs every one of them there and mixes nothing, and
its metrics equal those of the plain CPU bit for bit (the fake device computes on the CPU, so a difference is
a code path that depends on the device).

The harness leans on `TorchFunctionMode` and storage attributes; it was checked on torch 2.14.1 (CPU build).
A real device run is the final word: docs/scaling.md.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import pkgutil
import traceback

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

import tc.analysis
import tc.analysis.run
from tc.analysis.inputs import RunContext
from tc.analysis.result import AnalysisResult
from tc.config import AnalyzeConfig
from tc.core import baselines as measures
from tc.core import compose
from tc.core import consistency as C
from tc.core import sgd_noise as noise
from tc.core.checkpoints import Checkpoints
from tc.core.data import load_data
from tc.core.models import ModelSpec, build_model

FAKE = torch.device("meta")
# every module of the analysis: a function is patched in each module that imported it, where it is called from
ANALYSIS = [importlib.import_module(f"tc.analysis.{m.name}") for m in pkgutil.iter_modules(tc.analysis.__path__)]
HEAVY = {"conv2d", "linear", "batch_norm", "cdist", "conv_transpose2d"}
# seeded draws stay on the CPU: a device's generator gives other numbers than the CPU's for one seed, so an
# analysis on a GPU would not reproduce its CPU twin
RANDOM = {
    "randn", "rand", "randint", "randperm", "normal", "normal_", "uniform_", "bernoulli", "bernoulli_",
    "multinomial", "randn_like", "rand_like", "randint_like", "random_", "exponential_", "poisson",
}  # fmt: skip
MAY_MIX = {"copy_", "__setitem__", "to", "cpu", "__getitem__", "__set__", "_has_compatible_shallow_copy_type"}


def _storage(t: torch.Tensor):
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None


def on_device(t: torch.Tensor) -> bool:
    s = _storage(t)
    return s is not None and getattr(s, "_tc_on_device", False)


def _mark(t: torch.Tensor) -> None:
    s = _storage(t)
    if s is not None:
        s._tc_on_device = True


def _is_fake(a) -> bool:
    return (isinstance(a, torch.device) and a.type == "meta") or (isinstance(a, str) and a.startswith("meta"))


def _is_cpu(a) -> bool:
    return (isinstance(a, torch.device) and a.type == "cpu") or (isinstance(a, str) and a.startswith("cpu"))


def _where() -> str:
    frames = [f for f in traceback.extract_stack() if "/tc/" in f.filename]
    return f"{frames[-1].filename.rsplit('/tc/', 1)[1]}:{frames[-1].lineno}" if frames else "?"


class FakeAccelerator(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.phase: str | None = None  # the phase running now (`accelerator` names them)
        self.heavy: list[tuple] = []  # (phase, op, where, ran on the device)
        self.violations: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if func is torch.device:  # naming the device is not moving to it
            return func(*args, **kwargs)
        if name == "__get__":  # properties: .device of a device tensor is the device; .grad, .data follow
            prop = getattr(getattr(func, "__self__", None), "__name__", "")
            if prop == "device" and on_device(args[0]):
                return FAKE
            out = func(*args, **kwargs)
            if isinstance(out, torch.Tensor) and on_device(args[0]):
                _mark(out)
            return out
        leaves = pytree.tree_leaves((args, kwargs))
        tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
        to_device = any(_is_fake(a) for a in leaves)
        if to_device:
            args, kwargs = pytree.tree_map(lambda a: torch.device("cpu") if _is_fake(a) else a, (args, kwargs))
        if name == "cpu" or (name == "to" and any(_is_cpu(a) for a in leaves)):
            out = func(*args, **kwargs)
            return out.clone() if on_device(out) else out  # an unmarked copy, as a device-to-host copy
        if name in ("numpy", "__array__") and on_device(args[0]):
            self.violations.append(f"{name} of a device tensor at {_where()}")
        if name == "__getitem__":
            if not on_device(args[0]) and any(on_device(t) for t in tensors[1:]):
                self.violations.append(f"host tensor indexed by a device tensor at {_where()}")
        elif name not in MAY_MIX:
            dense = {on_device(t) for t in tensors if t.dim() > 0}
            if len(dense) == 2:
                self.violations.append(f"{name} mixes device and host tensors at {_where()} (phase {self.phase})")
        if name in RANDOM and (to_device or any(on_device(t) for t in tensors)):
            self.violations.append(f"random draw {name} on the device at {_where()} (phase {self.phase})")
        if name in HEAVY:
            self.heavy.append((self.phase, name, _where(), all(on_device(t) for t in tensors)))
        out = func(*args, **kwargs)
        if name in ("copy_", "__setitem__"):
            return out
        if to_device or (on_device(args[0]) if name == "__getitem__" else any(on_device(t) for t in tensors)):
            inputs = {id(_storage(t)) for t in tensors}
            outs = pytree.tree_map(
                lambda t: t.clone() if isinstance(t, torch.Tensor) and id(_storage(t)) in inputs and to_device else t,
                out,
            )
            for t in pytree.tree_leaves(outs):
                if isinstance(t, torch.Tensor):
                    _mark(t)
            return outs
        return out


@pytest.fixture
def accelerator(monkeypatch):
    return _install(monkeypatch)


def _install(monkeypatch) -> FakeAccelerator:
    """The fake device, for everything that resolves `cfg.device`, and each phase named while it runs."""
    acc = FakeAccelerator()
    real_to = nn.Module.to

    def module_to(self, *args, **kwargs):
        if not any(_is_fake(a) for a in (*args, *kwargs.values())):
            return real_to(self, *args, **kwargs)
        rest_args = [a for a in args if not _is_fake(a)]
        rest_kwargs = {k: v for k, v in kwargs.items() if not _is_fake(v)}
        if rest_args or rest_kwargs:  # a dtype or memory format besides the device
            real_to(self, *rest_args, **rest_kwargs)

        def move(t):
            c = t.clone()
            _mark(c)
            return c

        return self._apply(move)

    monkeypatch.setattr(nn.Module, "to", module_to)
    resolving = [m for m in ANALYSIS if hasattr(m, "resolve_device")]
    assert {"run", "anisotropy", "composites", "controls", "baselines", "mmd"} <= {
        m.__name__.rsplit(".", 1)[1] for m in resolving
    }
    for module in resolving:
        monkeypatch.setattr(module, "resolve_device", lambda device: FAKE)

    def phased(owner, name):
        real = getattr(owner, name)

        def run(*a, **k):
            outer, acc.phase = acc.phase, name
            try:
                return real(*a, **k)
            finally:
                acc.phase = outer

        monkeypatch.setattr(owner, name, run)

    for owner, name in (
        (noise, "features"),
        (noise, "features_at_cuts"),
        (noise, "gradient_noise"),
        (noise, "perturbation_test"),
        (measures, "compute_all"),
        (C, "mmd2"),
        *[
            (m, name)
            for name in ("composite_outputs", "composite_outputs_naive", "network_predictions")
            for m in ANALYSIS
            if hasattr(m, name)
        ],
    ):
        phased(owner, name)
    return acc


def _checkpoints(n: int, seed: int = 0) -> tuple[nn.Module, list[dict]]:
    spec = ModelSpec("resnet20", 8, 8, 1, 8, 10)  # width 8: no convolution the CPU guard would rewrite
    sds = []
    for i in range(n):
        torch.manual_seed(seed + i)
        sds.append({k: v.clone() for k, v in build_model(spec).state_dict().items()})
    return build_model(spec), sds


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def test_every_part_of_an_analysis_runs_on_the_configured_device(monkeypatch):
    model, sds = _checkpoints(3)
    _, other = _checkpoints(2, seed=10)
    data = load_data("digits", train_size=512)  # 4 full minibatches of 128: gradient noise is computed
    cfg = AnalyzeConfig(
        run_id="x",
        max_samples=24,
        null_draws=100,
        cuts="1,3",
        batch_size=16,
        grad_batches=4,
        aniso_k=2,
        splits="train,test",
    )
    run = RunContext(model, 128, 0, reference=Checkpoints([0, 9], other))
    plain = tc.analysis.run.analyze_run(Checkpoints([0, 5, 10], sds), data, cfg, run).metrics  # the plain CPU
    accelerator = _install(monkeypatch)
    with accelerator:
        metrics = tc.analysis.run.analyze_run(Checkpoints([0, 5, 10], sds), data, cfg, run).metrics
    # the oracle: the device's analysis equals the plain CPU's bit for bit (timings aside); with the fake
    # device computing on the CPU, a difference is a code path that depends on the device
    timed = {k for k in metrics if k.endswith("_seconds") or k.endswith("_cost_epochs")}
    assert set(metrics) == set(plain)
    differ = {k: (metrics[k], plain[k]) for k in set(metrics) - timed if not _same(metrics[k], plain[k])}
    assert differ == {}, f"{len(differ)} metrics differ between the device and the CPU: {sorted(differ.items())[:5]}"
    assert "gm_disagreement" in metrics and "tc_mmd" in metrics and "aniso_grad_min_pvalue" in metrics
    assert accelerator.violations == []
    phases = {phase for phase, *_ in accelerator.heavy}
    # `features` runs through `features_at_cuts`: every feature pass (mmd's, anisotropy's) is named by the latter;
    # the whole networks' predictions come out of the composite pass (its diagonal): no forward of their own
    expected = {"features_at_cuts", "gradient_noise", "perturbation_test", "compute_all", "mmd2", "composite_outputs"}
    assert expected <= phases
    off = sorted({(phase, op, where) for phase, op, where, there in accelerator.heavy if not there})
    assert off == [], f"{len(off)} kinds of operations ran off the device: {off}"
    # the model the caller passed is never moved
    assert not any(on_device(t) for t in [*model.parameters(), *model.buffers()])


def test_the_whole_networks_own_forward_runs_on_the_configured_device(monkeypatch):
    """Where tc_full cannot read the composites' diagonal (bn_mode=recalibrate: the naive composites, whose
    diagonal has re-estimated BatchNorm; bf16 likewise), `network_predictions` runs a forward of its own: on
    the device too, and with the plain CPU's numbers."""
    model, sds = _checkpoints(3)
    data = load_data("digits", train_size=256)
    cfg = AnalyzeConfig(
        run_id="x", max_samples=16, cuts="1,3", batch_size=8, splits="test", bn_mode="recalibrate",
        calibration_batches=1, anisotropy=False, measures=False,
    )  # fmt: skip
    ckpts, run = Checkpoints([0, 5, 10], sds), RunContext(model, 128, 0)
    plain = tc.analysis.run.analyze_run(ckpts, data, cfg, run).metrics
    accelerator = _install(monkeypatch)
    with accelerator:
        metrics = tc.analysis.run.analyze_run(ckpts, data, cfg, run).metrics
    timed = {k for k in metrics if k.endswith("_seconds") or k.endswith("_cost_epochs")}
    assert set(metrics) == set(plain) and "tc_full_test" in metrics
    assert {k for k in set(metrics) - timed if not _same(metrics[k], plain[k])} == set()
    assert accelerator.violations == []
    phases = {phase for phase, *_ in accelerator.heavy}
    assert {"composite_outputs_naive", "network_predictions"} <= phases
    off = sorted({(phase, op, where) for phase, op, where, there in accelerator.heavy if not there})
    assert off == [], f"{len(off)} kinds of operations ran off the device: {off}"


def test_the_harness_sees_what_a_device_would_refuse(accelerator):
    """The fake device is only a check if it fails: a model left on the host, labels left on the host."""
    lin = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with accelerator:
        lin(x)  # all on the host: runs, recorded as off the device
        moved = nn.Linear(3, 2).to(FAKE)
        out = moved(x.to(FAKE))
        assert out.device == FAKE and out.cpu().device.type == "cpu"
        nn.functional.cross_entropy(out, torch.tensor([0, 1, 0, 1]))  # labels on the host
        out.detach().numpy()
        torch.randn(3, generator=torch.Generator().manual_seed(0))  # a seeded draw on the host: fine
        torch.randn(3, device=FAKE)  # draws aimed at the device
        torch.zeros(3).to(FAKE).normal_()
        torch.multinomial(out.softmax(1), 1)
    assert [there for *_, there in accelerator.heavy] == [False, True]
    assert len(accelerator.violations) == 5
    assert sum("random draw" in v for v in accelerator.violations) == 3


def test_composites_load_each_distinct_checkpoint_once(monkeypatch):
    """The final checkpoint is a shallow and a deep checkpoint; on the full matrix every one is: each gets
    one model on the device, and the outputs do not change."""
    model, sds = _checkpoints(3)
    g = torch.Generator().manual_seed(0)
    xy = torch.randn(10, 1, 8, 8, generator=g), torch.randint(10, (10,), generator=g)
    real, loaded = compose._loaded, []
    monkeypatch.setattr(compose, "_loaded", lambda *a: loaded.append(a[1]) or real(*a))
    for columns, want in ((None, 3), ([2], 3)):
        loaded.clear()
        opts = compose.ComposeOptions(columns=columns, batch_size=4)
        fast = compose.composite_outputs(model, sds, sds, xy, [1, 3], opts)
        assert len(loaded) == want and len({id(sd) for sd in loaded}) == want
        naive = compose.composite_outputs_naive(model, sds, sds, xy, [1, 3], opts)
        for cut in (1, 3):
            assert torch.equal(fast[cut].done, naive[cut].done)
            assert torch.equal(fast[cut].pred[fast[cut].done], naive[cut].pred[naive[cut].done])


def _logged_run(seed: int, steps: list[int]) -> tuple[str, dict]:
    """A run logged with tc's own-loop API: resnet20 checkpoints at `steps`; returns (id, last state dict)."""
    import mlflow

    import tc as tc_api
    from tc.tracking import own_loop

    data = load_data("digits", train_size=256)
    with mlflow.start_run() as run:
        cfg = tc_api.log_run_info(model="resnet20", dataset="digits", data=data, depth=8, width=8, seed=seed)
        torch.manual_seed(seed)
        net = build_model(ModelSpec.of(cfg, data))
        for step in steps:
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            own_loop.log_checkpoint(net, step, step / 10)
    return run.info.run_id, {k: v.clone() for k, v in net.state_dict().items()}


def test_the_reference_run_loads_only_its_last_checkpoint(mlflow_store, monkeypatch):
    from tc.core import checkpoints as ck
    from tc.tracking import checkpoints

    run_id, _ = _logged_run(0, [0, 4, 8])
    reference_id, last = _logged_run(1, [0, 3, 6, 9])
    loaded, fetched = [], []
    real = ck.load_checkpoint
    monkeypatch.setattr(ck, "load_checkpoint", lambda path, *a: loaded.append(str(path)) or real(path, *a))
    real_fetch = MlflowClient.download_artifacts

    def fetch(self, run_id, path, *a, **k):
        fetched.append((run_id, path))
        return real_fetch(self, run_id, path, *a, **k)

    monkeypatch.setattr(MlflowClient, "download_artifacts", fetch)
    ckpts, _, run = checkpoints.load_analysis_inputs(AnalyzeConfig(run_id=run_id, reference_run_id=reference_id))
    assert ckpts.steps == [0, 4, 8]
    assert run.reference.steps == [9]
    assert all(torch.equal(run.reference.state_dicts[0][k], v) for k, v in last.items())
    from_reference = [p for p in loaded if reference_id in p]
    assert len(from_reference) == 1 and from_reference[0].endswith(ck.filename(9))
    # downloaded: the index and the last checkpoint only (the cache was empty)
    assert sorted(p for r, p in fetched if r == reference_id) == [
        "checkpoints/index.json",
        "checkpoints/" + ck.filename(9),
    ]


@pytest.mark.parametrize("held", [False, 3, 9.0])
def test_a_loaded_checkpoint_must_hold_its_index_step_as_an_int(tmp_path, held):
    """`_load_one` (the last checkpoint of a reference run, step 0 of an analysed run): a payload whose step
    is a bool (False == 0), a float or another step is refused."""
    from tc.core import checkpoints as ck
    from tc.tracking import checkpoints

    spec = ModelSpec("mlp", 2, 8, 1, 8, 10)
    net = build_model(spec)
    entry = ck.save_checkpoint(tmp_path, 0, 0.0, spec.to_dict(), net.state_dict())
    good = checkpoints._load_one("r", net, entry, tmp_path / entry.file)
    assert all(torch.equal(good[k], v) for k, v in net.state_dict().items())
    payload = ck.safe_load(tmp_path / entry.file)
    payload["step"] = held
    ck.atomic_save(payload, tmp_path / entry.file)
    lying = ck.IndexEntry(0, 0.0, entry.file, ck.sha256(tmp_path / entry.file))
    with pytest.raises(ck.CheckpointError, match=r"listed as step 0 but holds step"):
        checkpoints._load_one("r", net, lying, tmp_path / entry.file)
    with pytest.raises(ck.CheckpointError, match=r"listed as step 0 but holds step"):
        checkpoints.load_initial_state("r", net, [(lying, tmp_path / entry.file)])


def test_tf32_is_off_on_cuda_for_the_analysis_only_and_restored():
    """`exact_fp32` (CPU-runnable: the flags are plain settings): on a CUDA device, matmul and cuDNN TF32 are
    off inside the block, the caller's settings come back after, also when the block raises; other devices are
    left alone."""
    from tc.core.device import exact_fp32

    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    try:
        for matmul, conv in (("high", True), ("medium", False), ("highest", True)):
            torch.set_float32_matmul_precision(matmul)
            torch.backends.cudnn.allow_tf32 = conv
            with exact_fp32(torch.device("cpu")):
                assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == (matmul, conv)
            with pytest.raises(KeyError), exact_fp32(torch.device("cuda")):
                assert torch.get_float32_matmul_precision() == "highest"
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                raise KeyError("the analysis failed")
            assert (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32) == (matmul, conv)
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


def test_analyze_run_runs_inside_the_tf32_scope_of_its_device(monkeypatch):
    entered = []

    @contextlib.contextmanager
    def scope(device):
        entered.append(device)
        yield

    def inside(*a, **k):
        assert entered, "the analysis started outside exact_fp32"
        raise KeyError("stop")

    monkeypatch.setattr(tc.analysis.run, "exact_fp32", scope)
    monkeypatch.setattr(tc.analysis.run, "consistency_analysis", inside)
    data = load_data("digits", train_size=64)
    with pytest.raises(KeyError, match="stop"):
        two = Checkpoints([0, 1], [{}, {}])  # analyze_run checks the count (at least two) before anything else
        tc.analysis.run.analyze_run(two, data, AnalyzeConfig(run_id="r", device="cpu"), RunContext(None, 8, 0))
    assert entered == [torch.device("cpu")]


def test_every_step_of_analyze_run_runs_inside_the_tf32_scope(monkeypatch):
    # each named step of analyze_run (the consistency family, the anisotropy, the measures) inside exact_fp32:
    # a step moved out of the `with` block would compute with TF32 on a GPU, which no CPU result shows
    depth = []

    @contextlib.contextmanager
    def scope(device):
        depth.append(device)
        try:
            yield
        finally:
            depth.pop()

    seen = []

    def step(name, returns=None):
        def record(*a, **k):
            seen.append((name, len(depth)))
            return returns

        return record

    tables = [pd.DataFrame() for _ in range(5)]
    result = AnalysisResult(*tables, metrics={"analysis_seconds": 1.0}, summary={"warnings": []})
    monkeypatch.setattr(tc.analysis.run, "exact_fp32", scope)
    monkeypatch.setattr(tc.analysis.run, "consistency_analysis", step("consistency", result))
    monkeypatch.setattr(tc.analysis.run, "add_anisotropy", step("anisotropy"))
    monkeypatch.setattr(tc.analysis.run, "add_measures", step("measures"))
    cfg = AnalyzeConfig(run_id="r", device="cpu")
    assert cfg.anisotropy and cfg.measures  # the defaults: every step runs
    two = Checkpoints([0, 1], [{}, {}])
    out = tc.analysis.run.analyze_run(two, load_data("digits", train_size=64), cfg, RunContext(nn.Linear(1, 1), 8, 0))
    assert out is result and seen == [("consistency", 1), ("anisotropy", 1), ("measures", 1)]
