"""kdcore.networks and kdcore.batching: BatchedFFNN seed s is exactly the FFNN that torch.manual_seed(s)
gives, in and out of BN; every registered architecture batched over seeds trains as its standalone networks do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from kdcore.batching import BatchedFFNN, SeedModel, StackedModel, batched, from_states
from kdcore.config import MODEL_NAMES, ModelSpec
from kdcore.errors import ConfigError, DataError
from kdcore.networks import FFNN, MODELS, ConvNet, build, parameter_count, resolve_factory

SEEDS = [0, 10, 1234, 99, 2021]


def _reference_net(seed: int, batch_norm: bool = False) -> nn.Sequential:
    """The published model as anyone would write it: global seed, then nn.Sequential."""
    torch.manual_seed(seed)
    if batch_norm:
        return nn.Sequential(nn.Linear(2, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, 10),
                             nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 2))
    return nn.Sequential(nn.Linear(2, 20), nn.ReLU(), nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 2))


def _as_ffnn_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"net.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("batch_norm", [False, True])
def test_seed_weights_equal_manual_seed_sequential(batch_norm: bool) -> None:
    state = torch.get_rng_state()
    model = BatchedFFNN(2, (20, 10), 2, SEEDS, batch_norm=batch_norm)
    torch.set_rng_state(state)
    assert model.n_seeds == 5 and model.seeds == tuple(SEEDS)
    for i, seed in enumerate(SEEDS):
        expected = _as_ffnn_keys(_reference_net(seed, batch_norm).state_dict())
        got = model.seed_state(i)
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value), (seed, key)
    # different seeds really are different networks
    assert not torch.equal(model.seed_state(0)["net.0.weight"], model.seed_state(1)["net.0.weight"])


def test_ffnn_equals_manual_seed_sequential_for_other_widths() -> None:
    net = FFNN(3, (7, 5, 4), 6, generator=torch.Generator().manual_seed(42))
    torch.manual_seed(42)
    ref = nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(),
                        nn.Linear(4, 6))
    for key, value in ref.state_dict().items():
        assert torch.equal(net.state_dict()[f"net.{key}"], value), key


def test_model_does_not_depend_on_global_rng() -> None:
    torch.manual_seed(1)
    a = BatchedFFNN(2, (20, 10), 2, [3])
    torch.manual_seed(2)
    b = BatchedFFNN(2, (20, 10), 2, [3])
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)


def _per_seed_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(S, B, C) logits, (S, B) labels -> (S,) batch-mean cross-entropy, written with plain torch."""
    s, b, _ = logits.shape
    return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(s, b).mean(1)


def _singles(model: BatchedFFNN, batch_norm: bool = False) -> list[FFNN]:
    out = []
    for i in range(model.n_seeds):
        net = FFNN(2, (20, 10), 2, batch_norm=batch_norm, generator=torch.Generator())
        net.load_state_dict(model.seed_state(i))
        out.append(net)
    return out


def test_batched_forward_equals_each_ffnn() -> None:
    model = BatchedFFNN(2, (20, 10), 2, SEEDS)
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(64, 2, generator=gen) * 3
    per_seed = torch.randn(5, 64, 2, generator=gen) * 3
    out_shared, out_per_seed = model(shared), model(per_seed)
    assert out_shared.shape == out_per_seed.shape == (5, 64, 2)
    for i, net in enumerate(_singles(model)):
        torch.testing.assert_close(out_shared[i], net(shared), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(out_per_seed[i], net(per_seed[i]), atol=1e-6, rtol=1e-6)


def test_batched_model_stays_equal_through_training() -> None:
    """A few Adam steps on the summed batched loss keep every seed equal to its standalone net."""
    model = BatchedFFNN(2, (20, 10), 2, SEEDS[:3])
    singles = _singles(model)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 32, 2, generator=gen), torch.randint(0, 2, (3, 32), generator=gen)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    opts = [torch.optim.Adam(n.parameters(), lr=1e-2) for n in singles]
    for _ in range(5):
        opt.zero_grad()
        _per_seed_ce(model(x), y).sum().backward()
        opt.step()
        for i, (net, o) in enumerate(zip(singles, opts)):
            o.zero_grad()
            nn.functional.cross_entropy(net(x[i]), y[i]).backward()
            o.step()
    for i, net in enumerate(singles):
        for key, value in net.state_dict().items():
            torch.testing.assert_close(model.seed_state(i)[key], value, atol=1e-6, rtol=1e-5)


def test_batch_norm_matches_ffnn_in_train_and_eval_mode() -> None:
    model = BatchedFFNN(2, (20, 10), 2, SEEDS[:3], batch_norm=True)
    singles = _singles(model, batch_norm=True)
    gen = torch.Generator().manual_seed(2)
    # SGD, not Adam: the bias before a BN layer gets a zero gradient up to rounding, and Adam would blow that
    # rounding noise up to lr-sized steps that differ between the two sides (harmless, but not comparable)
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    opts = [torch.optim.SGD(n.parameters(), lr=0.2) for n in singles]
    model.train()
    for net in singles:
        net.train()
    for _ in range(6):
        x = torch.randn(3, 40, 2, generator=gen) * 2 + 1  # off-centre, so running stats move away from 0 / 1
        y = (x.norm(dim=-1) > 2).long()
        out = model(x)  # one forward per step on both sides: each train-mode forward moves the running stats
        single_out = [net(x[i]) for i, net in enumerate(singles)]
        for i in range(3):
            # train mode: normalised by the batch statistics
            torch.testing.assert_close(out[i], single_out[i], atol=1e-5, rtol=1e-5)
        opt.zero_grad()
        _per_seed_ce(out, y).sum().backward()
        opt.step()
        for i, o in enumerate(opts):
            o.zero_grad()
            nn.functional.cross_entropy(single_out[i], y[i]).backward()
            o.step()
    running_mean = model.seed_state(0)["net.1.running_mean"]
    assert running_mean.abs().max() > 0.1  # the statistics are non-trivial
    model.eval()
    test_x = torch.randn(50, 2, generator=gen)
    out = model(test_x)
    for i, net in enumerate(singles):
        # running statistics tracked the same way as nn.BatchNorm1d (momentum 0.1, unbiased variance)
        for key in ("net.1.running_mean", "net.1.running_var", "net.4.running_mean", "net.4.running_var"):
            torch.testing.assert_close(model.seed_state(i)[key], net.state_dict()[key], atol=1e-5, rtol=1e-5)
        # an independent FFNN loaded from seed_state gives the same eval-mode outputs
        fresh = FFNN(2, (20, 10), 2, batch_norm=True, generator=torch.Generator())
        fresh.load_state_dict(model.seed_state(i))
        fresh.eval()
        net.eval()
        torch.testing.assert_close(out[i], fresh(test_x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out[i], net(test_x), atol=1e-4, rtol=1e-4)
    # eval mode does not touch the running statistics, and each row is independent of the batch
    before = model.seed_state(0)["net.1.running_mean"]
    torch.testing.assert_close(model(test_x[:1])[:, 0], out[:, 0], atol=1e-6, rtol=1e-6)
    assert torch.equal(model.seed_state(0)["net.1.running_mean"], before)


# --- the registry and seed batching for any architecture (kdcore.networks.build, kdcore.batching.batched / from_states) ------

IMAGE_SHAPES = [(1, 8, 8), (3, 32, 32)]
SMALL_RESNET = ModelSpec("resnet", depth=8, channels=(4, 4, 8, 8))


def test_registry_holds_the_built_in_names() -> None:
    assert set(MODELS) == set(MODEL_NAMES)


@pytest.mark.parametrize(("name", "fragment"), [
    ("no_such_package_kd.models:make", "cannot import module 'no_such_package_kd.models'"),
    ("math:no_such_factory", "module 'math' has no attribute 'no_such_factory'"),
    ("math:pi", "'pi' must be callable"),
    ("not an import path", "an import path 'package.module:function'"),
])
def test_resolve_factory_fails_with_one_line(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_factory(name)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's module ``kd_user_models`` on sys.path with a good and a bad factory."""
    (tmp_path / "kd_user_models.py").write_text(
        "import math\n"
        "from torch import nn\n"
        "def tiny(input_shape, n_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 6), nn.BatchNorm1d(6),\n"
        "                         nn.ReLU(), nn.Linear(6, n_classes))\n"
        "def not_a_module(input_shape, n_classes):\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return "kd_user_models"


def test_factory_by_import_path_builds_and_batches(user_models: str) -> None:
    spec = ModelSpec(f"{user_models}:tiny")
    net = build(spec, (1, 8, 8), 4, seed=3)
    torch.manual_seed(3)
    ref = resolve_factory(f"{user_models}:tiny")((1, 8, 8), 4)
    for key, value in ref.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    model = batched(spec, (1, 8, 8), 4, [3, 4])
    x = torch.randn(5, 1, 8, 8)
    out = model(x)  # train mode: batch statistics, and the running ones move on both sides
    assert out.shape == (2, 5, 4)
    torch.testing.assert_close(out[0], net(x), atol=1e-6, rtol=1e-6)
    model.eval()
    net.eval()
    torch.testing.assert_close(model(x)[0], net(x), atol=1e-6, rtol=1e-6)
    assert parameter_count(spec, (1, 8, 8), 4) == 64 * 6 + 6 + 2 * 6 + 6 * 4 + 4
    with pytest.raises(ConfigError, match="must return an nn.Module, but returned a int"):
        build(ModelSpec(f"{user_models}:not_a_module"), (2,), 2, seed=0)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
def test_output_shapes(name: str, shape: tuple[int, ...]) -> None:
    spec = ModelSpec(name, channels=(4, 4, 8, 8) if name == "resnet" else None)
    x = torch.randn(6, *shape)
    assert build(spec, shape, 10, seed=0)(x).shape == (6, 10)
    model = batched(spec, shape, 10, [0, 1, 2])
    assert model.seeds == (0, 1, 2) and model.n_seeds == 3
    assert model(x).shape == (3, 6, 10)  # shared input
    assert model(torch.randn(3, 6, *shape)).shape == (3, 6, 10)  # per-seed input
    with pytest.raises(DataError, match=r"input must be \(S=3, B, \*"):
        model(torch.randn(2, 6, *shape))  # wrong number of seeds


def test_cnn_skips_the_pool_at_one_pixel() -> None:
    net = build(ModelSpec("cnn", channels=(2, 2, 2, 2, 2)), (1, 8, 8), 3, seed=0)
    shapes = [tuple(f.shape) for f in net.features(torch.randn(2, 1, 8, 8))]  # type: ignore[operator]
    assert shapes == [(2, 2, 4, 4), (2, 2, 2, 2), (2, 2, 1, 1), (2, 2, 1, 1), (2, 2, 1, 1)]


@pytest.mark.parametrize(("depth", "published"), [(8, 1.23e6), (32, 7.43e6)])
def test_resnet_x4_parameter_counts_match_the_published_sizes(depth: int, published: float) -> None:
    """RepDistiller's resnet8x4 (1.23 M) and resnet32x4 (7.43 M) on CIFAR-100."""
    spec = ModelSpec("resnet", depth=depth, channels=(8, 16, 32, 64), width=4)
    assert parameter_count(spec, (3, 32, 32), 100) == pytest.approx(published, rel=0.02)


def test_resnet_exposes_features_pool_and_classifier() -> None:
    net = build(ModelSpec("resnet", depth=8, channels=(8, 16, 32, 64), width=4), (3, 32, 32), 100, seed=0)
    x = torch.randn(2, 3, 32, 32)
    feats = net.features(x)  # type: ignore[operator]
    assert [tuple(f.shape) for f in feats] == [(2, 32, 32, 32), (2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8)]
    torch.testing.assert_close(net(x), net.fc(net.pool(feats[-1])))  # type: ignore[operator]


def test_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    net = build(ModelSpec("cnn"), (1, 8, 8), 10, seed=7)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(7)
    ref = ConvNet((1, 8, 8), (16, 32), 10, batch_norm=False)
    for key, value in ref.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_build_equals_ffnn_and_batched_is_batched_ffnn(batch_norm: bool) -> None:
    spec = ModelSpec("mlp", hidden=(20, 10), batch_norm=batch_norm)
    model = batched(spec, (2,), 2, SEEDS)
    assert isinstance(model, BatchedFFNN)
    for i, seed in enumerate(SEEDS):
        net = build(spec, (2,), 2, seed=seed)
        ref = FFNN(2, (20, 10), 2, batch_norm=batch_norm, generator=torch.Generator().manual_seed(seed))
        assert net.state_dict().keys() == ref.state_dict().keys()
        for key, value in ref.state_dict().items():
            assert torch.equal(net.state_dict()[key], value), key
        for key, value in model.seed_state(i).items():
            assert torch.equal(ref.state_dict()[key], value), key


def test_mlp_flattens_image_input() -> None:
    spec = ModelSpec("mlp", hidden=(8,))
    model, net = batched(spec, (1, 8, 8), 3, [4]), build(spec, (1, 8, 8), 3, seed=4)
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(model(x)[0], net(x))
    torch.testing.assert_close(model(x[None])[0], net(x))


def _train_side_by_side(spec: ModelSpec, shape: tuple[int, ...], make_opt: Callable[[Any], torch.optim.Optimizer],
                        steps: int = 3) -> tuple[SeedModel, list[nn.Module]]:
    """Train a 3-seed batched model and its 3 standalone networks on the same per-seed batches."""
    seeds = [0, 10, 1234]
    model = batched(spec, shape, 4, seeds)
    singles = [build(spec, shape, 4, seed=s) for s in seeds]
    opt, opts = make_opt(model.parameters()), [make_opt(n.parameters()) for n in singles]
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x = torch.randn(3, 16, *shape, generator=gen) * 2 + 1  # off-centre: the running stats move
        y = torch.randint(0, 4, (3, 16), generator=gen)
        opt.zero_grad()
        _per_seed_ce(model(x), y).sum().backward()
        opt.step()
        for i, (net, o) in enumerate(zip(singles, opts)):
            net.train()
            o.zero_grad()
            nn.functional.cross_entropy(net(x[i]), y[i]).backward()
            o.step()
    return model, singles


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
}


@pytest.mark.parametrize("spec", [ModelSpec("cnn", channels=(4, 8)), ModelSpec("cnn", channels=(4, 8), batch_norm=True),
                                  SMALL_RESNET], ids=["cnn", "cnn-bn", "resnet8"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_batched_trains_as_standalone(spec: ModelSpec, optimizer: str) -> None:
    shape = (1, 8, 8)
    model, singles = _train_side_by_side(spec, shape, OPTIMIZERS[optimizer])
    model.eval()
    x = torch.randn(7, *shape, generator=torch.Generator().manual_seed(1))
    out = model(x)
    for i, net in enumerate(singles):
        net.eval()
        state = model.seed_state(i)
        assert state.keys() == net.state_dict().keys()
        for key, value in net.state_dict().items():  # weights and running statistics
            torch.testing.assert_close(state[key], value, atol=1e-5, rtol=1e-5, msg=key)
        torch.testing.assert_close(out[i], net(x), atol=1e-5, rtol=1e-5)
        fresh = build(spec, shape, 4, seed=99)
        fresh.load_state_dict(state)
        fresh.eval()
        torch.testing.assert_close(out[i], fresh(x), atol=1e-5, rtol=1e-5)
    if spec.batch_norm or spec.name == "resnet":
        assert model.seed_state(0)["stages.0.1.num_batches_tracked" if spec.name == "cnn"
                                   else "bn1.num_batches_tracked"] == 3
    # eval mode leaves the running statistics alone
    before = model.state_dict()
    model(x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_every_state_tensor_is_seed_first_and_survives_a_masked_reload() -> None:
    """The trainer's pattern: keep some seeds' weights with torch.where over state_dict, then reload."""
    model = batched(SMALL_RESNET, (1, 8, 8), 4, [0, 1, 2])
    state = model.state_dict()
    assert state and all(v.shape[0] == 3 for v in state.values())
    assert state["net.bn1.num_batches_tracked"].shape == (3,)
    old = {k: v.clone() for k, v in state.items()}
    model.train()
    model(torch.randn(3, 5, 1, 8, 8))  # moves the running statistics of every seed
    mask = torch.tensor([True, False, True])
    kept = {k: torch.where(mask.view(3, *[1] * (v.dim() - 1)), v, old[k]) for k, v in model.state_dict().items()}
    new_0 = model.seed_state(0)
    model.load_state_dict(kept)
    assert torch.equal(model.seed_state(0)["bn1.running_mean"], new_0["bn1.running_mean"])
    assert torch.equal(model.seed_state(1)["bn1.running_mean"], old["net.bn1.running_mean"][1])
    assert model.seed_state(1)["bn1.num_batches_tracked"] == 0


@pytest.mark.parametrize("spec", [ModelSpec("cnn", batch_norm=True), ModelSpec("mlp", batch_norm=True)],
                         ids=["cnn", "mlp"])
def test_from_states_puts_each_state_into_its_seed(spec: ModelSpec) -> None:
    teacher = build(spec, (1, 8, 8), 3, seed=5)
    teacher.train()
    teacher(torch.randn(8, 1, 8, 8))  # non-trivial running statistics
    teacher.eval()
    model = from_states(spec, (1, 8, 8), 3, [teacher.state_dict()] * 2, seeds=[0, 1])
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    out = model(x)
    for i in range(2):
        torch.testing.assert_close(out[i], teacher(x), atol=1e-6, rtol=1e-6)


def test_from_states_names_the_first_mismatch_in_one_line() -> None:
    spec = ModelSpec("cnn", channels=(4, 8), batch_norm=True)
    good = build(spec, (1, 8, 8), 3, seed=0).state_dict()
    wrong_shape = {**good, "fc.weight": torch.zeros(5, 8)}
    missing = {k: v for k, v in good.items() if k != "stages.1.0.weight"}
    extra = {**good, "head.weight": torch.zeros(1)}
    cases = [(wrong_shape, "'fc.weight' must have shape (3, 8), but got (5, 8)"),
             (missing, "missing key 'stages.1.0.weight'"), (extra, "unexpected key 'head.weight'")]
    for state, fragment in cases:
        with pytest.raises(ConfigError) as info:
            from_states(spec, (1, 8, 8), 3, [good, state], seeds=[0, 1])
        assert "state of seed 1 does not fit the model" in str(info.value) and fragment in str(info.value)
        assert "\n" not in str(info.value)
    mlp_state = build(ModelSpec("mlp"), (2,), 2, seed=0).state_dict()
    with pytest.raises(ConfigError, match=r"'net.2.weight' must have shape \(10, 20\), but got \(10, 4\)"):
        from_states(ModelSpec("mlp"), (2,), 2, [{**mlp_state, "net.2.weight": torch.zeros(10, 4)}], seeds=[0])
    with pytest.raises(ConfigError, match="one state per seed must be given, but got 1 state"):
        from_states(spec, (1, 8, 8), 3, [good], seeds=[0, 1])
    # checkpoints without num_batches_tracked (as nn.BatchNorm accepts) still load
    no_counter = {k: v for k, v in good.items() if not k.endswith("num_batches_tracked")}
    from_states(spec, (1, 8, 8), 3, [no_counter], seeds=[0])


def test_bad_model_settings_fail_with_the_rule() -> None:
    with pytest.raises(ConfigError, match=r"needs images, input_shape \(channels, height, width\), but got \(64,\)"):
        build(ModelSpec("cnn"), (64,), 10, seed=0)
    with pytest.raises(ConfigError, match="resnet depth must be 6n \\+ 2"):
        build(ModelSpec("resnet", depth=9), (3, 32, 32), 10, seed=0)
    with pytest.raises(ConfigError, match="at least one seed"):
        batched(ModelSpec("cnn"), (1, 8, 8), 10, [])


class _Tied(nn.Module):
    """Two layers sharing one weight: the stack must stay shared."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_stacked_model_keeps_tied_weights_tied() -> None:
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        nets.append(_Tied())
    model = StackedModel(nets, (0, 1), (4,))
    stacked = model.net.get_parameter("a.weight")
    assert stacked is model.net.get_parameter("b.weight")
    assert all(v.shape[0] == 2 for v in model.state_dict().values())
    x = torch.randn(3, 4)
    model(x).sum().backward()
    for i, net in enumerate(nets):
        net(x).sum().backward()
        assert stacked.grad is not None and net.a.weight.grad is not None
        torch.testing.assert_close(stacked.grad[i], net.a.weight.grad)


@pytest.mark.parametrize("depth, keys, params", [(8, 62, 1_233_540), (32, 206, 7_433_860)])
def test_resnets_carry_the_literature_s_module_names(depth: int, keys: int, params: int) -> None:
    """ResNet-8x4 and ResNet-32x4 on CIFAR-100 have RepDistiller's state-dict keys and parameter counts, so the
    toolboxes' teacher files load strictly."""
    net = build(ModelSpec("resnet", depth=depth, channels=(8, 16, 32, 64), width=4), (3, 32, 32), 100, seed=0)
    state = net.state_dict()
    assert len(state) == keys and sum(p.numel() for p in net.parameters()) == params
    assert list(state)[:2] == ["conv1.weight", "bn1.weight"]
    assert {"layer1.0.conv1.weight", "layer2.0.downsample.0.weight", "layer3.0.downsample.1.running_var",
            "fc.weight", "fc.bias"} <= state.keys()
    assert not any(k.startswith(("stem", "stages")) or "shortcut" in k for k in state)
