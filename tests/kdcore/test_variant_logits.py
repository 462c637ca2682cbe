"""The teachers' logits over every crop/flip variant (``kd.targets: variants``): a look-up gives what the
teacher gives on the same augmented batch (within float16), routed as the per-batch targets are; stored
once per key; refused where it cannot serve (SimKD)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from kdcore import augment, sources
from kdcore.config import ExperimentConfig, KDConfig
from kdcore.errors import ConfigError
from kdcore.prepared import Prepared, Subset, prepare, task_of
from kdcore.student import StudentRun, train_student
from kdcore.supervised import new_model
from kdcore.teachers import teacher_outputs
from kdcore.variant_logits import VariantCache, compute, variants_key

FIT = {"model": "cnn", "channels": [4, 8], "epochs": 1, "batch_size": 32, "augment": "crop_flip"}
SUBSETS = [{"classes": [0, 6, 8, 9]}, {"classes": [1, 4, 7]}, {"classes": [2, 3, 5]}]
TOL = {"rtol": 1e-3, "atol": 1e-5}  # float16 keeps 11 bits: within 2^-11 of each logit


def _config(**overrides: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "seeds": [0, 10], "teacher": FIT, "student": FIT, "baseline": FIT,
        "task": {"teachers": SUBSETS, "routing": "label"}, "kd": {"targets": "variants"},
    }).with_overrides(overrides)


def _small(prep: Prepared, n: int = 48) -> Prepared:
    """The first n training images of the digits, shared by both seeds: a fill of seconds."""
    fit = prep.fit
    if not fit.per_seed:
        return dataclasses.replace(prep, fit=Subset(fit.x[:n], fit.y[:n], fit.d[:n]))
    x = fit.x[fit.rows[0, :n]]  # seed 0's first n images, with their labels, for both seeds
    y, d = fit.y[:1, :n].expand(2, n), fit.d[:1, :n].expand(2, n)
    return dataclasses.replace(prep, fit=Subset(x, y, d, rows=torch.arange(n).expand(2, n)))

def _setup(kind: str = "crop_flip") -> tuple[ExperimentConfig, Prepared, list[torch.nn.Module]]:
    config = _config(**{"student.augment": kind})
    prep = _small(prepare(sources.load("builtin:digits"), config))
    torch.manual_seed(0)
    teachers = [new_model(prep, t.fit, config.seeds, len(t.classes)) for t in task_of(prep, config).teachers]
    return config, prep, teachers  # type: ignore[return-value]


@pytest.mark.parametrize("kind", ["crop_flip", "shift"])
def test_looked_up_logits_are_the_teacher_on_the_same_augmented_batch(kind: str) -> None:
    config, prep, teachers = _setup(kind)
    table = compute(teachers, prep.fit, kind)  # type: ignore[arg-type]
    assert table.tables[0].shape == (2, 48, augment.variant_count(kind), 4)
    assert table.tables[0].dtype == np.float16
    fit = prep.fit
    idx = torch.stack([torch.randperm(48, generator=torch.Generator().manual_seed(s))[:32] for s in (0, 1)])
    x, variant = augment.augment_drawn(fit.take_x(idx), kind, augment.generators(config.seeds),
                                       augment.black(fit.x), 2)
    assert variant is not None and int(variant.max()) < augment.variant_count(kind)
    on_device = table.to("cpu")  # the tables as tensors, as on an accelerator: the same rows
    assert all(isinstance(t, torch.Tensor) for t in on_device.tables)
    for a, b in zip(table.lookup(fit, idx, variant), on_device.lookup(fit, idx, variant)):
        assert torch.equal(a, b)
    for teacher, looked in zip(teachers, table.lookup(fit, idx, variant)):
        on_batch, _ = teacher_outputs(teacher, x)  # type: ignore[arg-type]
        assert looked.dtype == torch.float32 and looked.shape == on_batch.shape
        torch.testing.assert_close(looked, on_batch, **TOL)
        # exactly what the teacher gives, rounded to float16, up to the kernels' batch-size effects
        torch.testing.assert_close(looked, on_batch.half().float(), rtol=1e-4, atol=1e-6)


def test_routed_targets_from_the_tables_are_the_per_batch_targets() -> None:
    config, prep, teachers = _setup()
    looked = StudentRun(prep, config, teachers)  # type: ignore[arg-type]
    per_batch = StudentRun(prep, dataclasses.replace(config, kd=KDConfig(targets="batch")), teachers)  # type: ignore[arg-type]
    fit = prep.fit
    idx = torch.arange(32).expand(2, 32)
    x, variant = augment.augment_drawn(fit.take_x(idx), "crop_flip", augment.generators(config.seeds),
                                       augment.black(fit.x), 2)
    a = looked.batch_targets(None, idx, x, variant)  # type: ignore[arg-type]
    b = per_batch.batch_targets(None, idx, x, variant)  # type: ignore[arg-type]
    torch.testing.assert_close(a.logits, b.logits, **TOL)
    assert a.mask is not None and b.mask is not None and torch.equal(a.mask, b.mask)
    assert (a.weight is None) == (b.weight is None)


def test_the_tables_are_stored_once_per_key_and_read_back_memory_mapped(tmp_path: Path) -> None:
    config, prep, teachers = _setup()
    cache = VariantCache(tmp_path)
    first = cache.get_or_compute("k" * 64, teachers, prep.fit, "crop_flip")  # type: ignore[arg-type]
    again = cache.get_or_compute("k" * 64, teachers, prep.fit, "crop_flip")  # type: ignore[arg-type]
    assert all(isinstance(t, np.memmap) for t in again.tables)
    assert all(np.array_equal(a, b) for a, b in zip(first.tables, again.tables))
    key = variants_key("k" * 64, "crop_flip")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{key}.variants.json", f"{key}.variants.lock"] + [f"{key}.variants.teacher_{k}.npy" for k in range(3)])
    assert variants_key("k" * 64, "shift") != key and variants_key("j" * 64, "crop_flip") != key
    # a student trained from the stored tables is the one trained from tables computed in memory
    a = train_student(prep, config, teachers, variants=again)  # type: ignore[arg-type]
    b = train_student(prep, config, teachers)  # type: ignore[arg-type]
    assert np.isfinite(a.holdout_loss).all()
    assert (a.holdout_acc == b.holdout_acc).all() and (a.inner_loss == b.inner_loss).all()


def test_default_targets_are_per_batch_and_absent_from_the_record() -> None:
    assert KDConfig().targets == "batch" and "targets" not in KDConfig().to_dict()
    assert KDConfig(targets="variants").to_dict()["targets"] == "variants"
    with pytest.raises(ConfigError, match="kd.targets"):
        KDConfig(targets="table")
    with pytest.raises(ConfigError, match="feature maps"):
        KDConfig(method="simkd", targets="variants")
