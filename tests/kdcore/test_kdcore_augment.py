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
