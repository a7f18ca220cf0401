"""ONNX Runtime session options the node relies on."""

from __future__ import annotations

import pytest

from vknet_model.backends import open_backend
from vknet_model.bundled import BUNDLED_ONNX
from vknet_ros.node_settings import settings_from_values

SPIN = "session.intra_op.allow_spinning"


@pytest.mark.parametrize("spin", [True, False])
def test_spin_wait_reaches_the_session(spin: bool) -> None:
    backend = open_backend(BUNDLED_ONNX, backend="onnxruntime", ort_spin_wait=spin)
    options = backend.session.get_session_options()  # type: ignore[attr-defined]
    if spin:  # ONNX Runtime's default: no entry, threads spin
        with pytest.raises(RuntimeError, match="does not have configuration"):
            options.get_session_config_entry(SPIN)
    else:
        assert options.get_session_config_entry(SPIN) == "0"


def test_the_node_turns_spinning_off_by_default() -> None:
    assert settings_from_values({}).ort_spin_wait is False
    assert settings_from_values({"ort_spin_wait": True}).ort_spin_wait is True


def test_torch_options_reach_the_backend_and_bad_ones_are_refused() -> None:
    from vknet_model.backends import BackendError
    from vknet_model.backends.torch_backend import PRECISIONS
    from vknet_model.bundled import BUNDLED_MODEL
    from vknet_ros.node import load_pipeline
    from vknet_ros.node_settings import TORCH_PRECISIONS, SettingsError

    assert tuple(PRECISIONS) == TORCH_PRECISIONS  # the node's list mirrors the backend's (which needs torch)
    settings = settings_from_values({"model": str(BUNDLED_MODEL), "backend": "torch", "device": "cpu",
                                     "torch_precision": "bf16"})
    pipeline, line = load_pipeline(settings)
    assert pipeline.backend.precision == "bf16" and "bf16" in line  # type: ignore[attr-defined]
    with pytest.raises(SettingsError, match="torch_precision='fp64' is not one of"):
        settings_from_values({"torch_precision": "fp64"})
    with pytest.raises(BackendError, match="cuda_graph needs a CUDA device"):
        load_pipeline(settings_from_values({"model": str(BUNDLED_MODEL), "device": "cpu", "cuda_graph": True}))
