"""Config loading: defaults, strict keys, types, hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from vknet_model.config import ConfigError, VKNetConfig, config_from_dict, load_config, resolve_config


@pytest.mark.parametrize("name", ["tiny", "r18", "r50"])
def test_builtin_configs_load(name: str) -> None:
    cfg = resolve_config(name)
    assert cfg.data.num_classes == 19 and cfg.data.thing_ids == (11, 13)
    assert cfg.data.net_to_dataset[:2] == (11, 13) and sorted(cfg.data.net_to_dataset) == list(range(19))


def test_r50_is_the_papers_head() -> None:
    m = resolve_config("r50").model
    assert (m.backbone_depth, m.num_proposals, m.num_stages, m.channels, m.num_heads, m.ffn_dim) == \
        (50, 100, 3, 256, 8, 2048)
    assert (m.input_height, m.input_width) == (384, 1248)


def test_unknown_key_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  chanels: 128\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model.*chanels"):
        load_config(path)


def test_unknown_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="modle"):
        config_from_dict({"modle": {}})


@pytest.mark.parametrize(("values", "message"), [
    ({"model": {"channels": "wide"}}, "expected an integer"),
    ({"model": {"kernel_fusion": 1}}, "expected true/false"),
    ({"postprocess": {"overlap_thr": "high"}}, "expected a number"),
    ({"data": {"thing_ids": 11}}, "expected a list"),
    ({"model": {"backbone_depth": 101}}, "18, 34 or 50"),
    ({"model": {"input_height": 100}}, "multiple of 32"),
    ({"data": {"void_id": 3}}, "collides"),
    ({"train": {"cls_target": "soft"}}, "train.cls_target must be 'binary' or 'iou'"),
    ({"train": {"loss": {"vote": -1.0, "dice": -4}}}, "must be >= 0, got negative dice, vote"),
])
def test_bad_values_are_rejected(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(values)


def test_lists_become_tuples_and_ints_become_floats() -> None:
    cfg = config_from_dict({"data": {"thing_ids": [11, 13]}, "postprocess": {"overlap_thr": 1}})
    assert cfg.data.thing_ids == (11, 13)
    assert isinstance(cfg.postprocess.overlap_thr, float)


def test_hash_is_stable_and_sensitive() -> None:
    base = VKNetConfig()
    assert base.hash() == VKNetConfig().hash()
    assert base.hash() == config_from_dict(base.to_dict()).hash()
    assert base.hash() != config_from_dict({"tracker": {"memo_frames": 6}}).hash()


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="no built-in config 'r101'"):
        resolve_config("r101")


def test_loss_weights_and_matching_costs_are_part_of_the_config_and_its_hash() -> None:
    base = config_from_dict({})
    tuned = config_from_dict({"train": {"loss": {"dice": 2.0, "cost_dice": 1.0}}})
    assert (tuned.train.loss.dice, tuned.train.loss.cost_dice, tuned.train.loss.focal) == (2.0, 1.0, 2.0)
    assert tuned.hash() != base.hash()
    with pytest.raises(ConfigError, match=r"train.loss: unknown key\(s\) \['dcie'\]"):
        config_from_dict({"train": {"loss": {"dcie": 2.0}}})
