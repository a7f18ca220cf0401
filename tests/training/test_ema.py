"""The moving average of the weights (``train.ema_decay``): its arithmetic, and a run that keeps one."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

from training.ema import WeightAverage
from training.trainer import RunOptions, train
from vknet_model.checkpoint import read_checkpoint
from vknet_model.config import ConfigError, config_from_dict, load_config


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def _set(net: nn.Module, value: float, batches: int) -> None:
    """Every float parameter and buffer of ``net`` filled with ``value`` (running statistics + 0.5), the BN batch
    counter with ``batches``."""
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if tensor.dtype.is_floating_point:
                tensor.fill_(value + (0.5 if "running" in name else 0.0))
            else:
                tensor.fill_(batches)


def test_the_average_is_the_running_mean_until_the_decay_then_exponential() -> None:
    net = _net()
    _set(net, 100.0, 0)  # the start is forgotten at the first update
    average = WeightAverage(net, decay=0.6)
    for value, batches in ((1.0, 1), (2.0, 2), (6.0, 3)):
        _set(net, value, batches)
        average.update(net)
    # Decays 0, 1/2 (the mean of two), then min(0.6, 2/3) = 0.6: 0.6 * 1.5 + 0.4 * 6 = 3.3.
    state = average.net.state_dict()
    assert average.updates == 3
    assert torch.allclose(state["0.weight"], torch.full((4, 3), 3.3))
    assert torch.allclose(state["1.running_mean"], torch.full((4,), 3.8))  # buffers averaged like weights
    assert int(state["1.num_batches_tracked"]) == 3  # integer buffers copied
    assert not any(p.requires_grad for p in average.net.parameters())
    # The trained network is untouched by the average.
    assert torch.equal(net.state_dict()["0.weight"], torch.full((4, 3), 6.0))


def test_a_saved_average_resumes_exactly() -> None:
    net = _net()
    average = WeightAverage(net, decay=0.9)
    for value in (1.0, 2.0):
        _set(net, value, 0)
        average.update(net)
    restored = WeightAverage(_net(), decay=0.9)
    restored.load_state_dict(average.state_dict())
    _set(net, 4.0, 0)
    average.update(net)
    restored.update(net)
    assert restored.updates == average.updates == 3
    assert all(torch.equal(a, b) for a, b in zip(average.net.state_dict().values(),
                                                 restored.net.state_dict().values(), strict=True))


@pytest.mark.parametrize("decay", [-0.1, 1.0])
def test_a_decay_outside_zero_to_one_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        WeightAverage(_net(), decay)
    with pytest.raises(ConfigError, match=r"train\.ema_decay"):
        config_from_dict({"train": {"ema_decay": decay}})


def test_a_run_with_an_average_ships_it_validates_both_and_resumes_it(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    data, config_path = tiny_data
    values = load_config(config_path).to_dict()
    values["train"]["ema_decay"] = 0.5
    cfg = config_from_dict(values)
    out = tmp_path / "run"
    caplog.set_level("INFO")
    train(cfg, RunOptions(data=data, out=out, iters=2, progress=False))
    assert read_checkpoint(out / "last.pt")["ema"]["updates"] == 2
    train(cfg, RunOptions(data=data, out=out, iters=4, progress=False))  # resumes at 2, with the average
    shipped, raw = read_checkpoint(out / "model.pt"), read_checkpoint(out / "last.pt")
    assert shipped["ema_updates"] == 4 and shipped["ema_decay"] == 0.5  # restored, not restarted at 2
    # model.pt holds the average, last.pt the raw weights and the same average beside them.
    assert all(torch.equal(shipped["state_dict"][k], v) for k, v in raw["ema"]["weights"].items())
    assert not torch.equal(shipped["state_dict"]["initial.proposals.weight"],
                           raw["state_dict"]["initial.proposals.weight"])
    with (out / "val.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all({"STQ", "raw_STQ", "raw_AQ", "raw_SQ"} <= set(r) for r in rows)
    assert "raw weights STQ" in caplog.text and "holds the moving average of the weights (decay 0.5, 4 updates)" \
        in caplog.text
