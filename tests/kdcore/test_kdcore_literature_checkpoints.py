"""The toolboxes' teacher files load as they are: bare, wrapped in {"model": ...} / {"state_dict": ...}, with
DataParallel's "module." prefix; a file whose keys do not fit is one line naming the first misfit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdcore import ConfigError, FitConfig
from kdcore.checkpoint import load_teacher, unwrap_state
from kdcore.networks import build
from kdcore.task import Teacher

SPEC = {"model": "resnet", "depth": 8, "channels": (4, 4, 8, 16)}


def _teacher(path: Path) -> Teacher:
    return Teacher(index=0, classes=tuple(range(5)), group=None,
                   fit=FitConfig(**SPEC), checkpoint=str(path))


def _net() -> torch.nn.Module:
    net = build(FitConfig(**SPEC).model_spec, (3, 8, 8), 5, seed=3)
    net.eval()
    return net


@pytest.mark.parametrize("wrap", ["bare", "model", "state_dict", "module.", "model+module."])
def test_a_literature_file_loads_strictly_and_gives_the_network_s_logits(wrap: str, tmp_path: Path) -> None:
    net = _net()
    state = net.state_dict()
    if "module." in wrap:
        state = {f"module.{k}": v for k, v in state.items()}
    if wrap.startswith("model"):
        payload: object = {"epoch": 240, "model": state, "accuracy": torch.tensor(79.42)}
    elif wrap == "state_dict":
        payload = {"state_dict": state, "epoch": 3}
    else:
        payload = state
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save(payload, path)
    teacher = load_teacher(_teacher(path), (3, 8, 8), seeds=(0, 10))
    teacher.eval()
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        out = teacher(x)  # (S, B, C): every seed holds the file's network
        for s in range(2):
            torch.testing.assert_close(out[s], net(x), rtol=0, atol=0)


def test_a_file_of_another_layout_names_its_first_misfit_in_one_line(tmp_path: Path) -> None:
    state = {k.replace("layer1.", "stage1."): v for k, v in _net().state_dict().items()}
    path = tmp_path / "renamed.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ConfigError) as info:
        load_teacher(_teacher(path), (3, 8, 8), seeds=(0,))
    message = str(info.value)
    assert "\n" not in message and "layer1.0.conv1.weight" in message and str(path) in message


def test_unwrap_leaves_what_it_does_not_know() -> None:
    assert unwrap_state({"epoch": 3}) == {"epoch": 3}
    assert unwrap_state([1, 2]) == [1, 2]
    partly = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert unwrap_state(partly) is partly
