"""Checkpoint round trip and clear errors for every kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vknet_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vknet_model.config import ModelConfig, config_from_dict, resolve_config, values_hash
from vknet_model.network import build_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_model(cfg), cfg, step=7)
    return path


def test_round_trip_restores_weights_config_and_extras(saved: Path) -> None:
    cfg, net, payload = load_checkpoint(saved)
    torch.manual_seed(0)
    reference = build_model(resolve_config("tiny"))
    for (name, a), (_, b) in zip(net.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert cfg.hash() == resolve_config("tiny").hash()
    assert payload["step"] == 7 and payload["class_names"][13] == "car"
    assert not net.training
    assert not list(saved.parent.glob("*.tmp"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_truncated_file(saved: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(saved.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable vknet checkpoint"):
        load_checkpoint(broken)


def test_random_bytes(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match="not a readable vknet checkpoint"):
        load_checkpoint(junk)


def test_a_text_file_named_pt(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("these are not weights\n")  # torch.load raised IndexError: pop from empty list
    with pytest.raises(CheckpointError, match="not a readable vknet checkpoint"):
        load_checkpoint(text)


def test_foreign_torch_file(tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a vknet checkpoint"):
        load_checkpoint(other)


def test_weights_that_do_not_fit_the_config(saved: Path, tmp_path: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    wider = config_from_dict({**payload["config"], "model": {**payload["config"]["model"], "channels": 128}})
    payload["config"], payload["config_hash"] = wider.to_dict(), wider.hash()
    bad = tmp_path / "mismatch.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="do not fit the stored config"):
        load_checkpoint(bad)


def test_edited_config_is_detected(saved: Path, tmp_path: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    payload["config"]["tracker"]["memo_frames"] = 9
    edited = tmp_path / "edited.pt"
    torch.save(payload, edited)
    with pytest.raises(CheckpointError, match="does not match its hash"):
        load_checkpoint(edited)


def test_a_checkpoint_from_before_a_new_setting_still_loads(saved: Path, tmp_path: Path) -> None:
    """Written by an older vknet: its stored config lacks a setting added since (and its hash is of that
    config). It must verify as stored and load with the new setting's default, not read as tampered."""
    payload = torch.load(saved, weights_only=True)
    del payload["config"]["model"]["merge_stride"]
    payload["config_hash"] = values_hash(payload["config"])
    older = tmp_path / "older.pt"
    torch.save(payload, older)
    cfg, _, _ = load_checkpoint(older)
    assert cfg.model.merge_stride == ModelConfig().merge_stride
