"""kdcore.models: BatchedFFNN seed s is exactly the FFNN that torch.manual_seed(s) gives, in and out of BN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kdcore.models import FFNN, BatchedFFNN

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
