"""kdcore.losses: Hinton KD, cross-entropy and annealing-KD terms against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdcore import losses


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def _hand_kd(student: list[list[float]], teacher: list[list[float]], t: float) -> float:
    """T^2 * mean over samples of KL(softmax(teacher/T) || softmax(student/T)), in plain floats."""
    total = 0.0
    for zs, zt in zip(student, teacher):
        ps = _softmax([v / t for v in zs])
        pt = _softmax([v / t for v in zt])
        total += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    return t * t * total / len(student)


def _hand_ce(logits: list[list[float]], labels: list[int]) -> float:
    return -sum(math.log(_softmax(z)[y]) for z, y in zip(logits, labels)) / len(labels)


STUDENT = [[1.0, -1.0], [0.5, 2.0]]
TEACHER = [[3.0, 0.0], [-1.0, 1.0]]
LABELS = [0, 1]


@pytest.mark.parametrize("temperature", [1.0, 2.0, 9.0])
def test_kd_loss_is_zero_for_identical_logits_with_alpha_one(temperature: float) -> None:
    logits = torch.randn(16, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 4
    labels = torch.randint(0, 5, (16,), generator=torch.Generator().manual_seed(1))
    assert losses.kd_kl(logits, logits.clone(), temperature).item() == pytest.approx(0.0, abs=1e-12)
    loss = losses.hinton_kd(logits, logits.clone(), labels, alpha=1.0, temperature=temperature)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_kd_loss_is_never_negative() -> None:
    gen = torch.Generator().manual_seed(123)
    for draw in range(300):
        n, c = int(torch.randint(1, 9, (1,), generator=gen)), int(torch.randint(2, 7, (1,), generator=gen))
        scale = float(10 ** torch.empty(1).uniform_(-2, 2, generator=gen))
        student = torch.randn(n, c, generator=gen) * scale
        # half the draws: a teacher close to the student, where rounding could push a careless KL below 0
        near = draw % 2 == 0
        noise = torch.randn(n, c, generator=gen)
        teacher = student + 1e-4 * noise if near else noise * scale
        labels = torch.randint(0, c, (n,), generator=gen)
        temperature = float(torch.empty(1).uniform_(0.5, 20.0, generator=gen))
        alpha = float(torch.rand(1, generator=gen))
        kl = losses.kd_kl(student, teacher, temperature).item()
        # float32 rounding of a KL near 0, times T^2, may dip a hair below 0; never more than that
        slack = 1e-6 * temperature**2 if near else 0.0
        assert kl >= -slack, (draw, kl)
        assert losses.hinton_kd(student, teacher, labels, alpha, temperature).item() >= -slack, draw
        kl64 = losses.kd_kl(student.double(), teacher.double(), temperature).item()
        assert kl64 >= -1e-12 * temperature**2, (draw, kl64)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 9.0])
def test_kd_kl_matches_a_hand_computed_value(temperature: float) -> None:
    expected = _hand_kd(STUDENT, TEACHER, temperature)
    got = losses.kd_kl(torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64),
                       temperature)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert expected > 0.01  # the example is not degenerate


def test_kd_kl_first_value_written_out() -> None:
    # T = 2, sample 1: p_t = softmax(1.5, 0), p_s = softmax(0.5, -0.5); sample 2: p_t = softmax(-0.5, 0.5),
    # p_s = softmax(0.25, 1.0). KL by hand with sigmoid(a - b) for the first class.
    def sig(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    def kl2(a: float, b: float) -> float:  # KL(Bernoulli(a) || Bernoulli(b))
        return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))

    expected = 4 * (kl2(sig(1.5), sig(1.0)) + kl2(sig(-1.0), sig(-0.75))) / 2
    got = losses.kd_kl(torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64),
                       2.0)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_hinton_kd_matches_hand_computed_value(alpha: float) -> None:
    t = 3.0
    expected = (1 - alpha) * _hand_ce(STUDENT, LABELS) + alpha * _hand_kd(STUDENT, TEACHER, t)
    student, teacher = torch.tensor(STUDENT, dtype=torch.float64), torch.tensor(TEACHER, dtype=torch.float64)
    got = losses.hinton_kd(student, teacher, torch.tensor(LABELS), alpha, t)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_kd_kl_scales_by_t_squared(temperature: float) -> None:
    gen = torch.Generator().manual_seed(7)
    zs = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    zt = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    # unscaled KL of the softened distributions, from torch's own kl_div (an independent implementation)
    plain = F.kl_div(F.log_softmax(zs / temperature, -1), F.softmax(zt / temperature, -1),
                     reduction="batchmean")
    assert losses.kd_kl(zs, zt, temperature).item() == pytest.approx(temperature**2 * plain.item(), rel=1e-10)
    # and: softening inside equals softening the inputs beforehand at T = 1, times T^2
    at_one = losses.kd_kl(zs / temperature, zt / temperature, 1.0)
    expected = temperature**2 * at_one.item()
    assert losses.kd_kl(zs, zt, temperature).item() == pytest.approx(expected, rel=1e-10)


def test_alpha_zero_is_plain_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(20, 3, generator=gen), torch.randn(20, 3, generator=gen) * 5
    labels = torch.randint(0, 3, (20,), generator=gen)
    expected = F.cross_entropy(zs, labels)
    assert losses.hinton_kd(zs, zt, labels, 0.0, 9.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses.cross_entropy(zs, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses.cross_entropy(torch.tensor(STUDENT), torch.tensor(LABELS)).item() == pytest.approx(
        _hand_ce(STUDENT, LABELS), rel=1e-6)


def test_batched_shapes_give_per_seed_values() -> None:
    gen = torch.Generator().manual_seed(11)
    s, b, c = 5, 17, 3
    zs, zt = torch.randn(s, b, c, generator=gen), torch.randn(s, b, c, generator=gen)
    shared_labels = torch.randint(0, c, (b,), generator=gen)
    seed_labels = torch.randint(0, c, (s, b), generator=gen)

    kl = losses.kd_kl(zs, zt, 4.0)
    ce_shared = losses.cross_entropy(zs, shared_labels)
    ce_seed = losses.cross_entropy(zs, seed_labels)
    hinton = losses.hinton_kd(zs, zt, seed_labels, 0.4, 4.0)
    mse = losses.annealing_mse(zs, zt)
    for out in (kl, ce_shared, ce_seed, hinton, mse):
        assert out.shape == (s,)
    for i in range(s):
        assert kl[i].item() == pytest.approx(losses.kd_kl(zs[i], zt[i], 4.0).item(), rel=1e-6)
        assert ce_shared[i].item() == pytest.approx(F.cross_entropy(zs[i], shared_labels).item(), rel=1e-6)
        assert ce_seed[i].item() == pytest.approx(F.cross_entropy(zs[i], seed_labels[i]).item(), rel=1e-6)
        assert hinton[i].item() == pytest.approx(
            losses.hinton_kd(zs[i], zt[i], seed_labels[i], 0.4, 4.0).item(), rel=1e-6)
        assert mse[i].item() == pytest.approx(F.mse_loss(zs[i], zt[i]).item(), rel=1e-6)


def test_summed_batched_loss_gives_each_seed_its_own_gradient() -> None:
    gen = torch.Generator().manual_seed(5)
    zs = torch.randn(3, 8, 4, generator=gen, requires_grad=True)
    zt = torch.randn(3, 8, 4, generator=gen)
    labels = torch.randint(0, 4, (3, 8), generator=gen)
    losses.hinton_kd(zs, zt, labels, 0.5, 2.0).sum().backward()
    assert zs.grad is not None
    for i in range(3):
        alone = zs[i].detach().clone().requires_grad_(True)
        losses.hinton_kd(alone, zt[i], labels[i], 0.5, 2.0).backward()
        torch.testing.assert_close(zs.grad[i], alone.grad, rtol=1e-6, atol=1e-7)


def test_annealing_target_scales_teacher_logits() -> None:
    teacher = torch.tensor([[2.0, -4.0], [1.0, 0.5]])
    expected = torch.tensor([[0.5, -1.0], [0.25, 0.125]])
    torch.testing.assert_close(losses.annealing_target(teacher, 0.25), expected)
    torch.testing.assert_close(losses.annealing_target(teacher, 1.0), teacher)
    assert losses.annealing_target(teacher, 0.1).abs().max().item() == pytest.approx(0.4)


def test_annealing_mse_hand_value() -> None:
    student = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    target = torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    # squared errors 1, 4, 9, 0 -> mean 3.5 over samples and classes
    assert losses.annealing_mse(student, target).item() == pytest.approx(3.5)
    assert losses.annealing_mse(target, target).item() == 0.0
    assert np.isclose(losses.annealing_mse(student[None], target[None]).numpy(), [3.5]).all()


def test_settings_per_member_give_each_member_its_own_float_loss_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(3)
    s, t, y = torch.randn(4, 16, 3, generator=gen), torch.randn(4, 16, 1, 3, generator=gen), torch.randint(0, 3, (16,))
    alpha, temperature = (0.0, 0.3, 0.9, 1.0), (1.0, 1.7, 4.0, 20.0)
    packed = losses.subset_hinton_kd(s, t, None, None, y, torch.tensor(alpha, dtype=torch.float64),
                                     torch.tensor(temperature, dtype=torch.float64))
    for m in range(4):
        assert torch.equal(packed[m], losses.subset_hinton_kd(s[m:m + 1], t[m:m + 1], None, None, y, alpha[m],
                                                              temperature[m])[0])
    phi = (0.1, 0.25, 0.5, 1.0)
    target = losses.annealing_target(t[:, :, 0], torch.tensor(phi, dtype=torch.float64))
    assert all(torch.equal(target[m], losses.annealing_target(t[m, :, 0], phi[m])) for m in range(4))
