"""kdcore.augment: crop and flip by hand, per-seed generators, re-runs, shared inputs."""

from __future__ import annotations

import pytest
import torch

from kdcore.augment import AUGMENTATIONS, augment, crop_and_flip, draw
from kdcore.errors import ConfigError


def _gens(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_a_hand_example_of_crop_and_flip_gives_the_expected_pixels() -> None:
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 1, 2, 2)  # one seed, one image, one channel
    fill = torch.tensor([-9.0])
    # padding 1: the padded image is 4x4 with -9 around; offset (0, 0) takes its top-left 2x2
    top_left = crop_and_flip(x, torch.tensor([[[0, 0]]]), torch.tensor([[False]]), 1, fill)
    assert top_left.view(2, 2).tolist() == [[-9.0, -9.0], [-9.0, 1.0]]
    centre = crop_and_flip(x, torch.tensor([[[1, 1]]]), torch.tensor([[False]]), 1, fill)
    assert centre.view(2, 2).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    flipped = crop_and_flip(x, torch.tensor([[[1, 1]]]), torch.tensor([[True]]), 1, fill)
    assert flipped.view(2, 2).tolist() == [[2.0, 1.0], [4.0, 3.0]]
    # bottom-right crop, then mirrored: the crop is [[4, -9], [-9, -9]], mirrored [[-9, 4], [-9, -9]]
    corner = crop_and_flip(x, torch.tensor([[[2, 2]]]), torch.tensor([[True]]), 1, fill)
    assert corner.view(2, 2).tolist() == [[-9.0, 4.0], [-9.0, -9.0]]


def test_each_channel_is_padded_with_its_own_fill() -> None:
    x = torch.zeros(1, 1, 3, 2, 2)
    out = crop_and_flip(x, torch.tensor([[[0, 0]]]), torch.tensor([[False]]), 1, torch.tensor([1.0, 2.0, 3.0]))
    assert out[0, 0, :, 0, 0].tolist() == [1.0, 2.0, 3.0]


def test_draws_are_in_range_and_shift_never_flips() -> None:
    offsets, flips = draw("crop_flip", _gens([0, 1]), 4096)
    assert offsets.shape == (2, 4096, 2) and int(offsets.min()) == 0 and int(offsets.max()) == 8
    assert 0.45 < flips.float().mean().item() < 0.55
    offsets, flips = draw("shift", _gens([0]), 512)
    assert int(offsets.max()) == 2 and not flips.any()


def test_seeds_draw_independently_and_a_rerun_draws_the_same() -> None:
    x = torch.randn(64, 3, 8, 8)
    fill = torch.zeros(3)
    three = augment(x, "crop_flip", _gens([0, 10, 1234]), fill, 3)
    alone = augment(x, "crop_flip", _gens([10]), fill, 1)
    assert torch.equal(three[1], alone[0])  # seed 10 sees the same batch with or without the others
    assert not torch.equal(three[0], three[1])
    assert torch.equal(three, augment(x, "crop_flip", _gens([0, 10, 1234]), fill, 3))


def test_per_seed_inputs_are_augmented_per_seed() -> None:
    x = torch.randn(2, 16, 1, 8, 8)
    out = augment(x, "shift", _gens([0, 1]), torch.zeros(1), 2)
    assert out.shape == x.shape
    for s in range(2):
        assert torch.equal(out[s], augment(x[s], "shift", _gens([s]), torch.zeros(1), 1)[0])


def test_none_is_the_batch_itself_and_a_bad_name_is_refused() -> None:
    x = torch.randn(4, 1, 8, 8)
    assert augment(x, "none", _gens([0]), torch.zeros(1), 1) is x
    assert set(AUGMENTATIONS) == {"none", "crop_flip", "shift"}
    with pytest.raises(ConfigError, match="augment must be one of"):
        augment(x, "mixup", _gens([0]), torch.zeros(1), 1)


# ------------------------------------------------------------------ augmentation as a setting of a fit

DIGITS_TASK = {
    "seeds": [0, 10], "protocol": "seed",
    "teacher": {"model": "cnn", "channels": [4, 8], "epochs": 1, "batch_size": 128},
    "baseline": {"model": "cnn", "channels": [4, 8], "epochs": 1, "batch_size": 128},
    "student": {"model": "cnn", "channels": [4, 8], "epochs": 2, "batch_size": 128, "augment": "shift"},
    "kd": {"method": "hinton", "alpha": 0.5, "temperature": 2.0},
}


def _digits_run(spec: dict) -> dict:  # type: ignore[type-arg]
    from kdcore import ExperimentConfig, builtin, run_experiment

    return run_experiment(builtin("digits"), ExperimentConfig.from_dict(spec)).methods["student"].summary()


def test_the_teacher_runs_on_the_augmented_batch_the_student_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch a distillation loss takes its teacher's targets from is a batch that ``augment`` made
    (the very tensor), and those targets are the teacher's on it, not rows of targets of the raw images."""
    from kdcore import augment as augment_module
    from kdcore.student import StudentRun

    made: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []
    real_augment, real_targets = augment_module.augment_drawn, StudentRun.batch_targets

    def recording_augment(*args, **kwargs):  # type: ignore[no-untyped-def]
        out, variant = real_augment(*args, **kwargs)
        made.append(out)
        return out, variant

    def recording_targets(self, targets, idx, x, variant=None):  # type: ignore[no-untyped-def]
        seen.append(x)
        got = real_targets(self, targets, idx, x, variant)
        assert targets is None  # nothing precomputed on the raw images when batches are augmented
        assert torch.equal(got.logits, self.targets(_batch(self, idx, x)).logits)
        return got

    def _batch(run, idx, x):  # type: ignore[no-untyped-def]
        from kdcore.prepared import Subset

        train = run.prep.fit
        return Subset(x, train.take(train.y, idx), train.take(train.d, idx))

    monkeypatch.setattr(augment_module, "augment_drawn", recording_augment)
    monkeypatch.setattr(StudentRun, "batch_targets", recording_targets)
    _digits_run(DIGITS_TASK)
    assert seen and all(any(x is m for m in made) for x in seen)


def test_an_augmented_fit_is_deterministic_and_differs_from_none() -> None:
    first, again = _digits_run(DIGITS_TASK), _digits_run(DIGITS_TASK)
    plain = _digits_run({**DIGITS_TASK, "student": {**DIGITS_TASK["student"], "augment": "none"}})
    assert first["per_seed"] == again["per_seed"]
    assert first["inner_loss_mean"] != plain["inner_loss_mean"]


def test_augmenting_features_that_are_no_images_is_one_line() -> None:
    from kdcore import ConfigError, ExperimentConfig, builtin, run_experiment

    spec = {"seeds": [0], "protocol": "seed", "student": {"epochs": 1, "augment": "shift"},
            "teacher": {"epochs": 1}, "baseline": {"epochs": 1}}
    with pytest.raises(ConfigError, match="augmentation needs images"):
        run_experiment(builtin("d0.5"), ExperimentConfig.from_dict(spec))
    with pytest.raises(ConfigError, match="augment must be one of"):
        ExperimentConfig.from_dict({"student": {"augment": "mixup"}})
