"""Tasks: class-subset teachers, routing, the subset KD loss, and the multi-domain task as their default case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdcore import losses
from kdcore.config import FitConfig, TaskConfig
from kdcore.errors import ConfigError
from kdcore.task import resolve

DISJOINT = [{"classes": [0, 6, 8, 9]}, {"classes": [1, 4, 7]}, {"classes": [2, 3, 5]}]
OVERLAP = [{"classes": [0, 1, 2, 3, 4]}, {"classes": [4, 5, 6, 7]}, {"classes": [7, 8, 9, 0]}]


def task(teachers: object, routing: str = "label", n_classes: int = 10, n_groups: int = 1):
    return resolve(TaskConfig(teachers=teachers, routing=routing), FitConfig(), n_classes, n_groups)


def targets_for(layout: list[dict[str, list[int]]], y: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random teacher logits for labels y routed by label: (logits, mask, weight) as kdcore.teachers builds them."""
    t = task(layout)
    route = torch.as_tensor(t.route(y.numpy(), np.zeros_like(y.numpy())))  # (N, K)
    n_slots = int(route.sum(-1).max())
    gen = torch.Generator().manual_seed(seed)
    logits = torch.zeros(len(y), n_slots, 10)
    mask = torch.ones(len(y), n_slots, 10, dtype=torch.bool)
    weight = torch.zeros(len(y), n_slots)
    for i in range(len(y)):
        for r, k in enumerate(torch.nonzero(route[i]).squeeze(1).tolist()):
            classes = t.teachers[k].classes
            mask[i, r] = False
            mask[i, r, list(classes)] = True
            logits[i, r, list(classes)] = torch.randn(len(classes), generator=gen) * 3
            weight[i, r] = 1
    return logits, mask, weight


@pytest.mark.parametrize("layout", [DISJOINT, OVERLAP], ids=["disjoint", "overlap"])
def test_the_subset_target_is_a_distribution(layout: list[dict[str, list[int]]]) -> None:
    y = torch.arange(10).repeat(3)
    logits, mask, weight = targets_for(layout, y)
    for temperature in (1.0, 4.0):
        target = losses.subset_target(logits, mask, weight, temperature)  # (N, C)
        assert torch.allclose(target.sum(-1), torch.ones(len(y)), atol=1e-6)
        assert (target >= 0).all()
        # Each teacher's part is a distribution over its own classes only.
        p = torch.softmax((logits / temperature).masked_fill(~mask, -math.inf), -1)
        assert torch.allclose((p * mask).sum(-1)[weight > 0], torch.ones(int(weight.sum())), atol=1e-6)


def test_a_shared_class_is_distilled_from_both_teachers_each_over_its_own_classes() -> None:
    """A sample of class 4 (known to teachers {0..4} and {4..7}): its KD term is the mean of two KLs, each
    between one teacher's distribution and the student's renormalised over that teacher's classes. The
    course project instead averaged the teachers' probabilities slot by slot: that target sums to more
    than 1 (here 1.6 with these numbers), so it is not a distribution."""
    y = torch.tensor([4])
    logits, mask, weight = targets_for(OVERLAP, y)
    assert weight.tolist() == [[1.0, 1.0]]
    student = torch.randn(1, 10, generator=torch.Generator().manual_seed(5))
    got = losses.subset_kd_kl(student, logits, mask, weight, 2.0)
    by_hand = []
    for r, classes in enumerate(([0, 1, 2, 3, 4], [4, 5, 6, 7])):
        p = torch.softmax(logits[0, r, classes] / 2, -1)
        q = torch.softmax(student[0, classes] / 2, -1)
        by_hand.append(float((p * (p / q).log()).sum()))
    assert got.item() == pytest.approx(4 * sum(by_hand) / 2, rel=1e-5)  # T^2 * mean over the two teachers
    slotwise = torch.zeros(10)
    for r, classes in enumerate(([0, 1, 2, 3, 4], [4, 5, 6, 7])):
        slotwise[classes] += torch.softmax(logits[0, r, classes] / 2, -1)
    slotwise[4] /= 2
    assert slotwise.sum() > 1.01  # what not to do
    assert losses.subset_target(logits, mask, weight, 2.0).sum().item() == pytest.approx(1.0, abs=1e-6)


def test_subset_loss_equals_hinton_kd_when_every_teacher_knows_every_class() -> None:
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(5, 16, 10, generator=gen, requires_grad=True)
    teacher = torch.randn(5, 16, 10, generator=gen)
    labels = torch.randint(0, 10, (16,), generator=gen)
    mask = torch.ones(5, 16, 1, 10, dtype=torch.bool)
    weight = torch.ones(5, 16, 1)
    for alpha, temperature in ((0.9, 1.0), (0.5, 4.0), (1.0, 9.0)):
        new = losses.subset_hinton_kd(student, teacher.unsqueeze(2), mask, weight, labels, alpha, temperature)
        old = losses.hinton_kd(student, teacher, labels, alpha, temperature)
        assert torch.equal(new, old)  # to the last bit: the multi-domain task's results do not move
        g_new, = torch.autograd.grad(new.sum(), student)
        g_old, = torch.autograd.grad(old.sum(), student)
        assert torch.equal(g_new, g_old)


def test_subset_loss_matches_a_hand_computed_value() -> None:
    """Student logits (1, 2, 3) over 3 classes; one teacher knows {0, 2} with logits (0, ln 3): target (1/4, 3/4)."""
    student = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = torch.tensor([[[0.0, 0.0, math.log(3)]]])
    mask = torch.tensor([[[True, False, True]]])
    q = torch.tensor([math.e, math.e**3]) / (math.e + math.e**3)  # student renormalised over {0, 2}
    p = torch.tensor([0.25, 0.75])
    expected = float((p * (p / q).log()).sum())
    got = losses.subset_kd_kl(student, teacher, mask, torch.ones(1, 1), 1.0)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # Two routed teachers: the mean of their terms; an empty slot (weight 0) counts for nothing.
    both = losses.subset_kd_kl(student, torch.cat([teacher, teacher * 0], 1),
                               torch.cat([mask, torch.ones_like(mask)], 1), torch.tensor([[1.0, 1.0]]), 1.0)
    uniform = float((torch.full((3,), 1 / 3) * (torch.full((3,), 1 / 3) / torch.softmax(student[0], -1)).log()).sum())
    assert both.item() == pytest.approx((expected + uniform) / 2, rel=1e-6)
    padded = losses.subset_kd_kl(student, torch.cat([teacher, teacher * 0], 1),
                                 torch.cat([mask, torch.ones_like(mask)], 1), torch.tensor([[1.0, 0.0]]), 1.0)
    assert padded.item() == pytest.approx(expected, rel=1e-6)


def test_subset_loss_is_zero_when_the_student_agrees_on_the_teachers_classes() -> None:
    student = torch.tensor([[0.3, 5.0, 1.3]])  # any logit for class 1, which the teacher does not know
    teacher = torch.tensor([[[2.0, -7.0, 3.0]]])  # the same gap (1.0) between classes 0 and 2
    mask = torch.tensor([[[True, False, True]]])
    assert losses.subset_kd_kl(student, teacher, mask, torch.ones(1, 1), 2.0).abs().item() < 1e-6


def test_subset_loss_gradients_are_finite_and_stay_on_known_classes() -> None:
    y = torch.tensor([4, 1, 9, 7])
    logits, mask, weight = targets_for(OVERLAP, y)
    student = torch.randn(4, 10, requires_grad=True)
    loss = losses.subset_kd_kl(student, logits, mask, weight, 3.0)
    loss.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    # Sample 1 (label 1) is routed to teacher {0..4} alone: no gradient on the classes it does not know.
    assert torch.all(student.grad[1, 5:] == 0) and torch.any(student.grad[1, :5] != 0)


def test_routing_sends_each_sample_to_exactly_the_teachers_that_know_its_class() -> None:
    t = task(OVERLAP)
    y = np.arange(10)
    route = t.route(y, np.zeros(10, dtype=np.int64))
    for c in range(10):
        expected = [k for k, spec in enumerate(OVERLAP) if c in spec["classes"]]
        assert np.flatnonzero(route[c]).tolist() == expected
    assert t.shared_classes == (0, 4, 7)
    assert task(DISJOINT).shared_classes == ()
    assert task(DISJOINT, "all").route(y, np.zeros(10, dtype=np.int64)).all()


def test_the_multi_domain_task_is_the_default_configuration() -> None:
    t = resolve(TaskConfig(), FitConfig(), 2, 3)
    assert [(x.classes, x.group) for x in t.teachers] == [((0, 1), 0), ((0, 1), 1), ((0, 1), 2)]
    assert t.full_classes and t.one_teacher_each
    d = np.array([0, 1, 2, 2, 0])
    assert (t.route(np.zeros(5, dtype=np.int64), d).argmax(-1) == d).all()
    assert (t.route(np.zeros(5, dtype=np.int64), d).sum(-1) == 1).all()


@pytest.mark.parametrize(("teachers", "routing", "message"), [
    ([{"classes": [0, 1, 2]}, {"classes": [3, 4]}], "label", r"class\(es\) \[5, 6, 7, 8, 9\] have no teacher"),
    ([{"classes": [0, 1, 1]}], "label", r"names class\(es\) \[1\] twice"),
    ([{"classes": [0, 1, 2, 3, 4]}, {"classes": [5, 6, 7, 8, 9, 10]}], "label",
     r"task.teachers\[1\] names class\(es\) \[10\], but the data has classes 0..9"),
    ([{"classes": [0, 1, 2, 3, 4]}, {"classes": [5, 6, 7, 8, 9], "group": 3}], "label", "names group 3"),
    ([{"classes": [0]}, {"classes": list(range(10))}], "label", "knows only class"),
    ([{"classes": list(range(10))}], "group", "routing 'group' needs a group on every teacher"),
    ([{"classes": list(range(10)), "oops": 1}], "label", r"unknown key\(s\) \['oops'\]"),
    ([{"classes": list(range(10)), "model": {"lr": 1}}], "label", r"unknown key\(s\) \['lr'\] in a teacher's model"),
    ("some", "label", "task.teachers must be 'per_group'"),
])
def test_bad_layouts_are_refused_with_one_line(teachers: object, routing: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        task(teachers, routing)
    assert "\n" not in str(info.value)


def test_only_the_cells_the_data_holds_need_a_teacher() -> None:
    """Group 1 holds no class-0 sample, so nobody needs to know class 0 of group 1."""
    layout = [{"classes": [0, 1], "group": 0}, {"classes": [1, 2], "group": 1}]
    cells = np.array([[0, 0], [1, 0], [1, 1], [2, 1]])
    t = resolve(TaskConfig(teachers=layout, routing="label"), FitConfig(), 3, 2, cells)
    assert t.shared_classes == ()  # class 1 is known twice, but each sample reaches one of them
    with pytest.raises(ConfigError, match="class 0 of group 1 reaches no teacher that knows it"):
        resolve(TaskConfig(teachers=layout, routing="label"), FitConfig(), 3, 2, np.vstack([cells, [[0, 1]]]))


def test_the_multi_domain_task_shares_no_class() -> None:
    assert resolve(TaskConfig(), FitConfig(), 2, 3).shared_classes == ()
    assert task(OVERLAP, "all").shared_classes == (0, 4, 7)


def test_a_teacher_without_holdout_or_fold_samples_is_refused() -> None:
    from kdcore.task import check_coverage

    t = task(DISJOINT)
    y = np.arange(10).repeat(5)
    z = np.zeros_like(y)
    check_coverage(t, y, z, np.arange(10), np.zeros(10, dtype=np.int64), 5)
    with pytest.raises(ConfigError, match=r"teacher_1 \(classes \[1, 4, 7\]\) has no holdout sample"):
        check_coverage(t, y, z, np.array([0, 2, 3]), np.zeros(3, dtype=np.int64), 5)
    with pytest.raises(ConfigError, match=r"teacher_1 .* has 15 training sample"):
        check_coverage(t, y, z, np.arange(10), np.zeros(10, dtype=np.int64), 20)  # 20 folds; 3 classes x 5


def test_a_group_without_a_teacher_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"group\(s\) \[1\] have no teacher"):
        task([{"group": 0}], "group", n_classes=2, n_groups=2)
    with pytest.raises(ConfigError, match="class 0 of group 1 reaches no teacher that knows it"):
        task([{"classes": [0, 1], "group": 0}], "label", n_classes=2, n_groups=2)


def test_teacher_targets_hold_each_routed_teachers_logits_in_its_class_slots() -> None:
    from kdcore import batching
    from kdcore.prepared import Subset
    from kdcore.teachers import teacher_targets

    t = task(OVERLAP)
    spec = FitConfig(model="cnn", channels=(4,)).model_spec
    nets = [batching.batched(spec, (1, 8, 8), len(k.classes), [0, 1]) for k in t.teachers]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 1, 8, 8, generator=gen)
    y = torch.arange(10).repeat(2)
    targets = teacher_targets(t, nets, Subset(x, y, torch.zeros(20, dtype=torch.int64)))
    assert targets.logits.shape == (2, 20, 2, 10)  # at most two teachers know one class
    with torch.no_grad():
        own = [net(x) for net in nets]  # (S, N, |S_k|)
    for i in range(20):
        routed = [k for k, spec_k in enumerate(OVERLAP) if int(y[i]) in spec_k["classes"]]
        assert targets.weight[:, i].sum(-1).tolist() == [float(len(routed))] * 2
        for r, k in enumerate(routed):
            classes = list(t.teachers[k].classes)
            assert [targets.mask[s, i, r].nonzero().squeeze(-1).tolist() for s in range(2)] == [sorted(classes)] * 2
            torch.testing.assert_close(targets.logits[:, i, r, classes], own[k][:, i])


def test_a_subset_experiment_with_cnns_trains_each_seed_as_it_trains_alone() -> None:
    """Class-subset teachers routed by label over shared classes, CNNs with batch norm: two seeds batched
    equal each seed run alone on its own fold (teachers, baseline and student)."""
    from kdcore import sources
    from kdcore.config import ExperimentConfig
    from kdcore.experiment import run_experiment

    fit = {"model": "cnn", "channels": [4, 8], "batch_norm": True, "epochs": 2, "batch_size": 64}
    config = ExperimentConfig.from_dict({"seeds": [0, 10], "teacher": fit, "baseline": fit, "student": fit,
                                         "kd": {"alpha": 0.5, "temperature": 2.0},
                                         "task": {"teachers": OVERLAP, "routing": "label"}})
    digits = sources.load("builtin:digits")
    together = run_experiment(digits, config)
    assert list(together.methods) == ["baseline", "teacher_0", "teacher_1", "teacher_2", "student"]
    for i, seed in enumerate(config.seeds):
        alone = run_experiment(digits, config.with_overrides({"seeds": [seed], "fold_start": i}))
        for name, batched in together.methods.items():
            single = alone.methods[name]
            np.testing.assert_allclose(batched.holdout_loss[i], single.holdout_loss[0], rtol=1e-4, atol=1e-6)
            for key, value in single.model.seed_state(0).items():
                torch.testing.assert_close(batched.model.seed_state(i)[key], value, rtol=1e-4, atol=1e-5,
                                           msg=lambda m: f"{name} seed {seed} {key}: {m}")  # noqa: B023
