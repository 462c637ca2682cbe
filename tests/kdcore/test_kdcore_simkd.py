"""kdcore.simkd and SimKD training: projector shapes, the reused head, the frozen teacher, the label mask,
batched seeds against standalone runs, the feature loss, and what SimKD refuses."""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcore import batching, loop, networks, simkd, sources
from kdcore.config import ExperimentConfig, ModelSpec
from kdcore.dataset import ClassificationData
from kdcore.errors import ConfigError
from kdcore.experiment import run_experiment
from kdcore.prepared import prepare
from kdcore.result import FitResult
from kdcore.simkd import simkd_model
from kdcore.student import train_student
from kdcore.teachers import teacher_outputs, train_teachers

SEEDS = [0, 10]
IMAGE = (1, 8, 8)
# Small networks: a ResNet-8 teacher (8, 8, 16, 16) and a narrower ResNet-8 student (4, 4, 8, 8).
TEACHER = {"model": "resnet", "depth": 8, "channels": [8, 8, 16, 16]}
STUDENT = {"model": "resnet", "depth": 8, "channels": [4, 4, 8, 8]}
RECIPE = {"epochs": 2, "batch_size": 64, "schedule": "constant", "lr": 1e-2}


@pytest.fixture(scope="module")
def digits() -> ClassificationData:
    """builtin:digits cut to 30 training and 10 holdout images per class (300 / 100): seconds to fit."""
    full = sources.load("builtin:digits")

    def first(y: np.ndarray, n: int) -> np.ndarray:
        return np.sort(np.concatenate([np.flatnonzero(y == c)[:n] for c in range(10)]))

    tr, va = first(full.y_train, 30), first(full.y_valid, 10)
    return ClassificationData.from_arrays({"x_train": full.x_train[tr], "y_train": full.y_train[tr],
                                           "x_valid": full.x_valid[va], "y_valid": full.y_valid[va]},
                                          source="digits-small")


def _config(kd: dict[str, Any] | None = None, seeds: list[int] = SEEDS, student: dict[str, Any] | None = None,
            teacher: dict[str, Any] | None = None, **top: Any) -> ExperimentConfig:
    kd = {"method": "simkd", "factor": 2, **(kd or {})}
    return ExperimentConfig.from_dict({
        "seeds": seeds, "teacher": {**RECIPE, **TEACHER, **(teacher or {})},
        "baseline": {**RECIPE, **STUDENT}, "student": {**RECIPE, **STUDENT, **(student or {})}, "kd": kd, **top})


def _net(spec: dict[str, Any], seed: int = 0, shape: tuple[int, ...] = IMAGE) -> nn.Module:
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "model"}
    return networks.build(ModelSpec(str(spec["model"]), **fields), shape, 10, seed)


def _with_statistics(net: nn.Module, seed: int) -> nn.Module:
    """Give every batch norm non-trivial running statistics (a few train-mode passes), then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(32, *IMAGE, generator=gen) * 2)
    return net.eval()


# ---------------------------------------------------------------- 1. projector shapes


# (student, teacher, placement, expected (C, H, W) of each projected map, previous stage first).
# On 8x8 images the resnet's stages are 8x8, 8x8, 4x4, 2x2 and a cnn halves the map per stage down to 1x1.
SHAPE_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str, list[tuple[int, int, int]]]] = {
    "resnet->resnet last": (STUDENT, TEACHER, "last", [(16, 2, 2)]),
    "resnet->resnet last_two": (STUDENT, TEACHER, "last_two", [(16, 4, 4), (16, 2, 2)]),
    # cnn (8,): one stage, 4x4 > the teacher's 2x2: the student map is pooled down to 2x2
    "cnn 4x4 -> resnet 2x2 (student larger)": ({"model": "cnn", "channels": [8]}, TEACHER, "last",
                                               [(16, 2, 2)]),
    # cnn (4, 4, 4): 1x1 < 2x2: the teacher map is pooled down to 1x1 (the student map is left as it is)
    "cnn 1x1 -> resnet 2x2 (student smaller)": ({"model": "cnn", "channels": [4, 4, 4], "batch_norm": True},
                                                TEACHER, "last", [(16, 1, 1)]),
    "cnn 4x4,2x2 -> resnet last_two": ({"model": "cnn", "channels": [4, 8]}, TEACHER, "last_two",
                                       [(16, 4, 4), (16, 2, 2)]),
    "cnn 1x1,1x1 -> resnet 4x4,2x2 last_two (student smaller)": (
        {"model": "cnn", "channels": [4, 4, 4, 4]}, TEACHER, "last_two", [(16, 1, 1), (16, 1, 1)]),
    # cnn teacher (8, 16, 24): stages 4x4, 2x2, 1x1; the resnet student's 4x4, 2x2 are pooled to 2x2, 1x1
    "resnet 4x4,2x2 -> cnn 2x2,1x1 last_two (student larger)": (
        STUDENT, {"model": "cnn", "channels": [8, 16, 24]}, "last_two", [(16, 2, 2), (24, 1, 1)]),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_projector_maps_the_student_shape_to_the_aligned_teacher_shape(case: str, factor: int) -> None:
    s_spec, t_spec, placement, expected = SHAPE_CASES[case]
    student, teacher = _net(s_spec, 0), _with_statistics(_net(t_spec, 1), 1)
    s_maps = [m.shape[1:] for m in student.features(torch.zeros(1, *IMAGE))][-len(expected):]  # type: ignore[operator]
    net = simkd.build_student(student, teacher, IMAGE, factor=factor, placement=placement).eval()
    assert len(net.projectors) == len(expected)
    for projector, s_shape, (c_t, _, _) in zip(net.projectors, s_maps, expected):
        convs = [m for m in projector.modules() if isinstance(m, nn.Conv2d)]
        assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
        assert convs[0].in_channels == s_shape[0]  # takes the student's channels
        assert convs[-1].out_channels == c_t  # gives the teacher's
        assert convs[0].out_channels == convs[1].in_channels == convs[1].out_channels == c_t // factor
        assert convs[2].in_channels == c_t // factor  # the bottleneck: teacher channels // factor
    x = torch.rand(5, *IMAGE)
    with torch.no_grad():
        logits, projected = net(x, features=True)
        s_raw = net.encoder.features(x)[-len(expected):]  # type: ignore[operator]
        t_maps = teacher.features(x)[-len(expected):]  # type: ignore[operator]
    assert logits.shape == (5, 10)
    assert [tuple(p.shape) for p in projected] == [(5, *e) for e in expected]
    for p, s_map, t_map, projector in zip(projected, s_raw, t_maps, net.projectors):
        smaller = min(s_map.shape[-2:], t_map.shape[-2:], key=lambda hw: hw[0] * hw[1])
        assert p.shape[-2:] == smaller  # the larger map is pooled to the smaller
        s_aligned, t_aligned = simkd.align(s_map, t_map)
        assert t_aligned.shape == p.shape  # the projection has the aligned teacher map's shape
        assert s_aligned.shape[-2:] == p.shape[-2:]
        # a larger student map is pooled before it is projected (the authors' order), a smaller one is not
        torch.testing.assert_close(p, projector(F.adaptive_avg_pool2d(s_map, smaller)))


def test_projector_on_one_seed_of_the_batched_network_has_the_same_shapes(digits: ClassificationData) -> None:
    config = _config({"placement": "last_two", "factor": 4})
    prep = prepare(digits, config)
    teacher = batching.batched(config.teacher.model_spec, IMAGE, 10, config.seeds)
    model = simkd_model(prep, config, teacher)
    logits, projected = model(prep.holdout.x[:7], features=True)
    assert logits.shape == (2, 7, 10)
    assert [tuple(p.shape) for p in projected] == [(2, 7, 16, 4, 4), (2, 7, 16, 2, 2)]
    _, t_maps = teacher_outputs(teacher, prep.holdout.x[:7], stages=2)
    assert [m.shape for m in t_maps] == [p.shape for p in projected]


# ---------------------------------------------------------------- 2. identity projector -> teacher logits


def _identity_(projector: nn.Module) -> None:
    """Make a factor-1 projector the identity on non-negative maps: 1x1 convs as identity matrices, the 3x3
    conv a centred delta, each batch norm (eval mode) x -> x (mean 0, var 1, scale sqrt(1 + eps), shift 0),
    ReLU a no-op on the post-ReLU features it receives."""
    with torch.no_grad():
        for m in projector.modules():
            if isinstance(m, nn.Conv2d):
                assert m.in_channels == m.out_channels
                m.weight.zero_()
                k = m.kernel_size[0] // 2
                m.weight[:, :, k, k] = torch.eye(m.out_channels)
            elif isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.weight.fill_(math.sqrt(1.0 + m.eps))
                m.bias.zero_()


@pytest.mark.parametrize("placement", ["last", "last_two"])
def test_identity_projector_on_the_teacher_encoder_reproduces_the_teacher_logits(placement: str) -> None:
    teacher = _with_statistics(_net(TEACHER, 3), 3)
    student = copy.deepcopy(teacher)  # the teacher's own encoder, same weights and statistics
    net = simkd.build_student(student, teacher, IMAGE, factor=1, placement=placement)
    for projector in net.projectors:
        _identity_(projector)
    net.eval()
    x = torch.rand(16, *IMAGE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, projected = net(x, features=True)
        t_logits, t_maps = teacher(x), teacher.features(x)[-len(projected):]  # type: ignore[operator]
    assert not torch.allclose(t_logits, torch.zeros_like(t_logits), atol=1e-2)
    torch.testing.assert_close(logits, t_logits, rtol=1e-5, atol=1e-5)
    for p, t in zip(projected, t_maps):
        torch.testing.assert_close(p, t, rtol=1e-5, atol=1e-5)
    loss = simkd.simkd_loss(logits, projected, t_maps, t_logits, t_logits.argmax(-1), kind="mse", prev_weight=0.5,
                            use_labels=False, ce_weight=0.0, logit_weight=0.0, temperature=4.0)
    assert float(loss) < 1e-10


def test_identity_projector_in_the_batched_simkd_network_reproduces_each_seeds_teacher(
        digits: ClassificationData) -> None:
    config = _config({"factor": 1, "placement": "last_two"}, student=TEACHER)  # student architecture = teacher's
    prep = prepare(digits, config)
    teacher = batching.batched(config.teacher.model_spec, IMAGE, 10, config.seeds)
    teacher.train()
    with torch.no_grad():
        teacher(prep.fit.inputs())  # per-seed running statistics
    model = simkd_model(prep, config, teacher)
    for i in range(model.n_seeds):
        state = model.seed_state(i)
        for key, value in teacher.seed_state(i).items():
            if not key.startswith("fc."):
                state[f"encoder.{key}"] = value
        one = simkd.build_student(_net(TEACHER), _net(TEACHER), IMAGE, factor=1, placement="last_two")
        for projector in one.projectors:
            _identity_(projector)
        state.update({k: v for k, v in one.state_dict().items() if k.startswith("projectors.")})
        model.load_seed_state(i, state)
    model.eval()
    x = prep.holdout.x
    t_logits, t_maps = teacher_outputs(teacher, x, stages=2)  # the teacher as SimKD runs it: eval mode
    with torch.no_grad():
        logits, projected = model(x, features=True)
    for p, t in zip(projected, t_maps):
        torch.testing.assert_close(p, t, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(t_logits[0], t_logits[1], atol=1e-2)  # two seeds, two different teachers
    torch.testing.assert_close(logits, t_logits, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 3. the teacher never changes


@pytest.fixture(scope="module")
def trained(digits: ClassificationData) -> dict[str, Any]:
    """Teachers (1 epoch), then a SimKD student (2 epochs, AdamW with weight decay, CE and KL on the reused
    head, so the head is on the gradient path and would decay if the optimizer held it). The optimizer and
    the initial SimKD network are recorded."""
    config = _config({"placement": "last_two", "ce_weight": 1.0, "logit_weight": 0.5, "temperature": 2.0},
                     student={"optimizer": "adamw", "weight_decay": 0.05}, teacher={"epochs": 1})
    prep = prepare(digits, config)
    teachers = train_teachers(prep, config)
    teacher = teachers[0].model
    teacher.zero_grad(set_to_none=True)  # clear what its own training left, to see whether SimKD writes any
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    initial = simkd_model(prep, config, teacher)
    optimizers: list[torch.optim.Optimizer] = []
    make = loop.make_optimizer

    def recording(model: nn.Module, fit: Any) -> torch.optim.Optimizer:
        optimizers.append(make(model, fit))
        return optimizers[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "make_optimizer", recording)
        result = train_student(prep, config, [teacher])
    return {"config": config, "prep": prep, "teacher": teacher, "teacher_before": before, "initial": initial,
            "result": result, "optimizers": optimizers}


def test_teacher_state_is_unchanged_by_simkd_training(trained: dict[str, Any]) -> None:
    teacher, before = trained["teacher"], trained["teacher_before"]
    after = teacher.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():  # weights, the classifier and the batch-norm running statistics
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in teacher.parameters())


def test_reused_head_is_frozen_equal_to_the_teachers_fc_and_left_out_of_the_optimizer(
        trained: dict[str, Any]) -> None:
    result: FitResult = trained["result"]
    teacher = trained["teacher"]
    net: Any = result.model.net
    head = list(net.head.parameters())
    assert len(head) == 2 and all(not p.requires_grad and p.grad is None for p in head)
    for i in range(result.model.n_seeds):
        state, t_state = result.model.seed_state(i), teacher.seed_state(i)
        assert torch.equal(state["head.weight"], t_state["fc.weight"])
        assert torch.equal(state["head.bias"], t_state["fc.bias"])
    (optimizer,) = trained["optimizers"]
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not held & {id(p) for p in head}
    trainable = {id(p) for p in list(net.encoder.parameters()) + list(net.projectors.parameters())}
    assert held == trainable  # exactly the encoder and the projectors
    assert not any(k.startswith("encoder.fc.") for k in result.model.seed_state(0))  # the student's head is gone


def test_encoder_and_projectors_did_train(trained: dict[str, Any]) -> None:
    result: FitResult = trained["result"]
    initial = trained["initial"]
    assert result.best_epoch.min() >= 1
    for i in range(result.model.n_seeds):
        start, end = initial.seed_state(i), result.model.seed_state(i)
        assert start.keys() == end.keys()
        for prefix in ("encoder.conv1.", "encoder.layer3.", "projectors.0.", "projectors.1."):
            moved = [k for k in start if k.startswith(prefix) and k.endswith("weight")
                     and not torch.equal(start[k], end[k])]
            assert moved, (i, prefix)


# ---------------------------------------------------------------- 4. the label-use mask


def test_label_mask_keeps_exactly_the_samples_the_teacher_gets_right() -> None:
    logits = torch.tensor([[[2.0, 1.0, 0.0],   # predicts 0
                            [0.0, 3.0, 1.0],   # predicts 1
                            [1.0, 0.0, 5.0],   # predicts 2
                            [0.5, 0.4, 0.3]],  # predicts 0
                           [[0.0, 0.0, 1.0],   # predicts 2
                            [0.0, 1.0, 0.0],   # predicts 1
                            [9.0, 0.0, 0.0],   # predicts 0
                            [0.0, 0.0, 2.0]]])  # predicts 2; (S=2, B=4, C=3)
    labels = torch.tensor([0, 2, 2, 0])
    assert simkd.label_mask(logits, labels).tolist() == [[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    assert simkd.label_mask(logits, torch.tensor([[0, 2, 2, 0], [2, 1, 0, 2]])).tolist() == [[1, 0, 1, 1], [1, 1, 1, 1]]


def _loss(**kw: Any) -> torch.Tensor:
    args: dict[str, Any] = {"kind": "mse", "prev_weight": 0.5, "use_labels": True, "ce_weight": 0.0,
                            "logit_weight": 0.0, "temperature": 4.0}
    return simkd.simkd_loss(**{**args, **kw})


def test_label_use_averages_the_feature_loss_over_the_kept_samples_only() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 3, 2, 2, generator=gen), torch.randn(2, 5, 3, 2, 2, generator=gen)  # (S, B, C, H, W)
    s_prev, t_prev = torch.randn(2, 5, 3, 4, 4, generator=gen), torch.randn(2, 5, 3, 4, 4, generator=gen)
    labels = torch.tensor([0, 1, 2, 1, 0])
    right = torch.tensor([[1, 1, 0, 0, 1], [0, 1, 0, 0, 0]], dtype=torch.bool)  # where the teacher is right
    t_logits = torch.where(right.unsqueeze(-1), F.one_hot(labels, 3).float(), F.one_hot((labels + 1) % 3, 3).float())
    logits = torch.randn(2, 5, 3, generator=gen)
    for seed in range(2):
        kept = right[seed].nonzero().squeeze(1).tolist()
        last = sum(float(((s[seed, i] - t[seed, i]) ** 2).mean()) for i in kept) / len(kept)
        prev = sum(float(((s_prev[seed, i] - t_prev[seed, i]) ** 2).mean()) for i in kept) / len(kept)
        got = _loss(logits=logits, projected=[s_prev, s], teacher_maps=[t_prev, t], teacher_logits=t_logits,
                    labels=labels)
        assert got.shape == (2,)
        assert float(got[seed]) == pytest.approx(last + 0.5 * prev, rel=1e-5)
        alone = _loss(logits=logits, projected=[s], teacher_maps=[t], teacher_logits=t_logits, labels=labels)
        assert float(alone[seed]) == pytest.approx(last, rel=1e-5)
    without = _loss(logits=logits, projected=[s], teacher_maps=[t], teacher_logits=t_logits, labels=labels,
                    use_labels=False)
    torch.testing.assert_close(without, ((s - t) ** 2).flatten(-3).mean(-1).mean(-1))


def test_a_batch_the_teacher_gets_all_wrong_adds_nothing_to_the_feature_term() -> None:
    gen = torch.Generator().manual_seed(1)
    s = torch.randn(2, 4, 3, 2, 2, generator=gen, requires_grad=True)
    t = torch.randn(2, 4, 3, 2, 2, generator=gen)
    labels = torch.tensor([0, 1, 2, 0])
    wrong = F.one_hot((labels + 1) % 3, 3).float().expand(2, 4, 3)
    logits = torch.randn(2, 4, 3, generator=gen)
    for kind in ("mse", "cosine"):
        loss = _loss(logits=logits, projected=[s], teacher_maps=[t], teacher_logits=wrong, labels=labels, kind=kind)
        assert loss.tolist() == [0.0, 0.0]
        (grad,) = torch.autograd.grad(loss.sum(), s)
        assert torch.equal(grad, torch.zeros_like(grad))
    # the CE term on the reused head still counts: only the feature term is masked
    with_ce = _loss(logits=logits, projected=[s], teacher_maps=[t], teacher_logits=wrong, labels=labels,
                    ce_weight=1.0)
    torch.testing.assert_close(with_ce, F.cross_entropy(logits.flatten(0, 1), labels.repeat(2), reduction="none")
                               .view(2, 4).mean(-1))


# ---------------------------------------------------------------- 5. batched seeds == standalone runs


# (kd, student fit overrides), covering last / last_two, mse / cosine, labels, CE and KL on the reused head.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "last-mse": ({"placement": "last", "feature_loss": "mse"}, {}),
    "last-cosine-labels-sgd": ({"placement": "last", "feature_loss": "cosine", "use_labels": True, "factor": 4},
                               {"optimizer": "sgd", "lr": 0.05, "nesterov": True, "weight_decay": 5e-4,
                                "schedule": "multistep", "milestones": [1], "gamma": 0.1}),
    "last_two-mse-ce": ({"placement": "last_two", "feature_loss": "mse", "ce_weight": 0.1, "prev_weight": 0.3}, {}),
    "last_two-cosine-kl": ({"placement": "last_two", "feature_loss": "cosine", "logit_weight": 0.5, "factor": 1},
                           {"optimizer": "adamw", "weight_decay": 0.01, "schedule": "onecycle", "max_lr": 0.02}),
}


def _assert_seed_equals_alone(together: dict[str, FitResult], alone: dict[str, FitResult], i: int, *,
                              n_select: int, n_holdout: int, rtol: float, atol: float) -> None:
    assert list(together) == list(alone) == ["teacher_0", "student"]
    for name, batched in together.items():
        single = alone[name]
        assert single.seeds == (batched.seeds[i],)
        np.testing.assert_allclose(batched.inner_acc[i], single.inner_acc[0], atol=1 / n_select + 1e-9)
        np.testing.assert_allclose(batched.holdout_acc[i], single.holdout_acc[0], atol=1 / n_holdout + 1e-9)
        np.testing.assert_allclose(batched.inner_loss[i], single.inner_loss[0], rtol=rtol, atol=atol)
        np.testing.assert_allclose(batched.holdout_loss[i], single.holdout_loss[0], rtol=rtol, atol=atol)
        assert batched.best_epoch[i] == single.best_epoch[0], name
        expected, got = single.model.seed_state(0), batched.model.seed_state(i)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            def message(m: str, where: str = f"{name} {key}") -> str:
                return f"{where}: {m}"

            torch.testing.assert_close(got[key], value, rtol=rtol, atol=atol, msg=message)


@pytest.mark.parametrize("variant", ["last-mse", "last_two-mse-ce"])
def test_batched_seeds_equal_standalone_simkd_runs(digits: ClassificationData, variant: str) -> None:
    kd, fit = VARIANTS[variant]
    methods = ("teachers", "student")
    together = run_experiment(digits, _config(kd, student=fit), methods=methods)
    assert together.methods["student"].head == "teacher classifier (reused, frozen)"
    n_select = len(prepare(digits, together.config).select)
    for i, seed in enumerate(SEEDS):  # seed i alone selects on fold i, as it does beside the others
        alone = run_experiment(digits, _config(kd, seeds=[seed], student=fit, fold_start=i), methods=methods)
        _assert_seed_equals_alone(together.methods, alone.methods, i, n_select=n_select, n_holdout=100,
                                  rtol=1e-4, atol=1e-5)


def _run_in_float64(digits: ClassificationData, config: ExperimentConfig) -> dict[str, FitResult]:
    """Teachers then student, as run_experiment does, with every network and input in float64."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        prep = prepare(digits, config)
        doubled: dict[str, Any] = {role: dataclasses.replace(sub, x=sub.x.double())
                                   for role, sub in (("fit", prep.fit), ("select", prep.select),
                                                     ("holdout", prep.holdout))}
        prep = dataclasses.replace(prep, **doubled)
        teachers = train_teachers(prep, config)
        return {"teacher_0": teachers[0], "student": train_student(prep, config, [teachers[0].model])}
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_seeds_equal_standalone_simkd_runs_in_float64(digits: ClassificationData, variant: str) -> None:
    """The same comparison without float32 rounding, so that it holds for every variant to 1e-9.

    In float32 the cosine variants part by 1e-5..1e-3 after 2 epochs (an almost-dead post-ReLU projected
    map has a tiny norm, and the cosine's gradient grows as its inverse, amplifying the rounding of a
    batched convolution); in float64 batched and standalone runs are bit-identical here.
    """
    kd, fit = VARIANTS[variant]
    together = _run_in_float64(digits, _config(kd, student=fit))
    net: Any = together["student"].model.net
    assert net.head.weight.dtype == torch.float64
    n_select = len(prepare(digits, _config(kd)).select)
    for i, seed in enumerate(SEEDS):
        alone = _run_in_float64(digits, _config(kd, seeds=[seed], student=fit, fold_start=i))
        _assert_seed_equals_alone(together, alone, i, n_select=n_select, n_holdout=100, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------- 6. the feature loss; the reused head


def test_feature_loss_is_zero_for_identical_maps_and_never_negative() -> None:
    gen = torch.Generator().manual_seed(2)
    s = torch.randn(3, 6, 4, 2, 2, generator=gen)
    for kind in ("mse", "cosine"):
        same = simkd.feature_loss(s, s.clone(), kind)
        assert same.shape == (3,)
        torch.testing.assert_close(same, torch.zeros(3), rtol=0, atol=1e-6)
        for trial in range(20):
            a, b = torch.randn(3, 6, 4, 2, 2, generator=gen), torch.randn(3, 6, 4, 4, 4, generator=gen)
            weight = (torch.rand(3, 6, generator=gen) > 0.5).float()
            assert (simkd.feature_loss(a, b, kind) >= 0).all(), (kind, trial)
            assert (simkd.feature_loss(a, b, kind, weight) >= 0).all(), (kind, trial)
    with pytest.raises(ConfigError, match="'mse' or 'cosine'"):
        simkd.feature_loss(s, s, "l1")


def test_mse_feature_loss_matches_a_hand_computed_value() -> None:
    s = torch.tensor([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])  # (B=2, C=1, H=1, W=2)
    t = torch.tensor([[[[0.0, 0.0]]], [[[3.0, 4.0]]]])
    # per sample: (1 + 4) / 2 = 2.5 and (9 + 16) / 2 = 12.5; mean over the batch 7.5
    assert float(simkd.feature_loss(s, t, "mse")) == pytest.approx(7.5)
    assert float(simkd.feature_loss(s, t, "mse", torch.tensor([0.0, 1.0]))) == pytest.approx(12.5)
    # alignment: a 2x2 student map is pooled to the teacher's 1x1 (mean 2.5 vs 0.5: (2.5 - 0.5)^2 = 4) ...
    big = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert float(simkd.feature_loss(big, torch.tensor([[[[0.5]]]]), "mse")) == pytest.approx(4.0)
    # ... and a 2x2 teacher map to the student's 1x1
    assert float(simkd.feature_loss(torch.tensor([[[[0.5]]]]), big, "mse")) == pytest.approx(4.0)


def test_cosine_feature_loss_ignores_the_scale_of_the_student_map() -> None:
    gen = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 5, 4, 2, 2, generator=gen), torch.randn(2, 5, 4, 2, 2, generator=gen)
    base = simkd.feature_loss(s, t, "cosine")
    for scale in (1e-3, 0.5, 3.7, 1e3):
        torch.testing.assert_close(simkd.feature_loss(scale * s, t, "cosine"), base, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(simkd.feature_loss(3.7 * s, t, "mse"), simkd.feature_loss(s, t, "mse"))
    torch.testing.assert_close(simkd.feature_loss(-s, t, "cosine"), 2 - base, rtol=1e-5, atol=1e-5)


def test_evaluation_goes_through_the_reused_teacher_classifier(trained: dict[str, Any]) -> None:
    result: FitResult = trained["result"]
    summary = result.summary()
    assert result.head == summary["head"] == "teacher classifier (reused, frozen)"
    detail: Any = summary["params_detail"]
    assert set(detail) == {"student", "projector", "reused_head_frozen"}
    student = _net(STUDENT)
    assert detail["student"] == sum(p.numel() for n, p in student.named_parameters() if not n.startswith("fc."))
    projectors = [simkd.Projector(8, 16, 2), simkd.Projector(8, 16, 2)]  # last_two, factor 2: 8 -> 16 twice
    assert detail["projector"] == sum(p.numel() for pr in projectors for p in pr.parameters())
    assert detail["reused_head_frozen"] == 16 * 10 + 10
    assert summary["params"] == result.params == detail["student"] + detail["projector"]
    # Each seed's holdout accuracy is that of the teacher's fc on the pooled projection, by hand.
    holdout = trained["prep"].holdout
    for i in range(result.model.n_seeds):
        state = result.model.seed_state(i)
        encoder = _net(STUDENT)
        encoder.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
                                | {k: v for k, v in encoder.state_dict().items() if k.startswith("fc.")})
        projector = simkd.Projector(8, 16, 2)
        projector.load_state_dict({k.removeprefix("projectors.1."): v for k, v in state.items()
                                   if k.startswith("projectors.1.")})
        fc = nn.Linear(16, 10)
        t_state = trained["teacher"].seed_state(i)
        fc.load_state_dict({"weight": t_state["fc.weight"], "bias": t_state["fc.bias"]})
        encoder.eval()
        projector.eval()
        with torch.no_grad():
            logits = fc(projector(encoder.features(holdout.x)[-1]).mean(dim=(-2, -1)))  # type: ignore[operator]
        acc = float((logits.argmax(-1) == holdout.y).double().mean())
        assert result.holdout_acc[i] == pytest.approx(acc, abs=1e-9)


# ---------------------------------------------------------------- 7. what SimKD refuses


def _one_line_config_error(call: Any) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_simkd_refuses_more_than_one_teacher(digits: ClassificationData) -> None:
    every = list(range(10))
    for task in ({"teachers": [{"classes": every}, {"classes": every}], "routing": "all"},
                 {"teachers": [{"classes": every[:5]}, {"classes": every[5:]}], "routing": "label"}):
        config = _config(task=task)
        prep = prepare(digits, config)
        teachers = [batching.batched(config.teacher.model_spec, IMAGE, n, config.seeds)
                    for n in (len(t["classes"]) for t in task["teachers"])]  # type: ignore[index]
        message = _one_line_config_error(functools.partial(train_student, prep, config, teachers))
        assert "simkd" in message and "2 teacher(s)" in message


def test_simkd_refuses_a_teacher_that_knows_only_some_classes(digits: ClassificationData) -> None:
    config = _config(task={"teachers": [{"classes": list(range(9))}], "routing": "label"})
    teacher = batching.batched(config.teacher.model_spec, IMAGE, 9, config.seeds)
    message = _one_line_config_error(lambda: train_student(prepare(digits, config), config, [teacher]))
    assert "every class" in message


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_simkd_refuses_an_mlp(digits: ClassificationData, role: str) -> None:
    mlp = {"model": "mlp", "hidden": [16]}
    config = _config(**{role: mlp})  # type: ignore[arg-type]
    teacher = batching.batched(config.teacher.model_spec, IMAGE, 10, config.seeds)
    message = _one_line_config_error(lambda: train_student(prepare(digits, config), config, [teacher]))
    assert "simkd" in message and f"the {role} is an mlp" in message
