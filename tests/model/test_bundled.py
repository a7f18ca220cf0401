"""Which file of the bundled model each backend gets when --model is left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from vknet_model.bundled import BUNDLED_MODEL, BUNDLED_ONNX, resolve_model


def test_the_bundled_file_fits_the_backend() -> None:
    assert resolve_model(None, backend="torch") == BUNDLED_MODEL
    assert resolve_model(None, backend="torch", prefer_onnx=True) == BUNDLED_MODEL  # the node asking for torch
    assert resolve_model(None, backend="onnxruntime") == BUNDLED_ONNX               # predict/eval-bag asking for ORT
    assert resolve_model(None, backend="tensorrt") == BUNDLED_ONNX
    assert resolve_model(None) == BUNDLED_MODEL
    assert resolve_model(None, prefer_onnx=True) == BUNDLED_ONNX


def test_a_given_model_is_used_as_it_is_or_reported_missing(tmp_path: Path) -> None:
    model = tmp_path / "mine.onnx"
    model.write_bytes(b"x")
    assert resolve_model(model, backend="torch") == model  # the backend then says what it thinks of it
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_model(tmp_path / "missing.pt")


def test_the_bundled_config_is_what_tiny_synth_yaml_documents() -> None:
    """The yaml names the bundled model's settings (thresholds tuned for its weights): checkpoint, contract and
    yaml must agree on everything but the training schedule the weights' last cycle ran with."""
    from vknet_model.checkpoint import load_checkpoint
    from vknet_model.config import resolve_config
    from vknet_model.contract import model_config

    documented = resolve_config("tiny_synth").to_dict()
    for config in (load_checkpoint(BUNDLED_MODEL)[0], model_config(BUNDLED_ONNX)):
        values = config.to_dict()
        for section in ("data", "model", "postprocess", "tracker", "export"):
            assert values[section] == documented[section], section
