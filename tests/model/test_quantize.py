"""INT8 quantisation of the bundled model: the contract, the graph, the precision choice and the agreement
with fp32 (CPU; the speed is measured in benchmarks, never here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vknet_data.synth import SynthConfig, SyntheticScene
from vknet_data.synth_stream import TRAIN_SCENE_SEED
from vknet_eval.agreement import RunAgreement
from vknet_model.backends import open_backend, resolve_precision
from vknet_model.backends.base import BackendError
from vknet_model.bundled import BUNDLED_MODEL, BUNDLED_ONNX
from vknet_model.contract import ModelContract, contract_path_for, file_sha256
from vknet_model.pipeline import Pipeline
from vknet_model.quantize import (
    QuantizeError,
    check_quantized_graph,
    float_ops_left,
    graph_precision,
    int8_path_for,
    quantize_model,
)


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled export and its int8 version side by side, as `vknet quantize` leaves them."""
    folder = tmp_path_factory.mktemp("int8")
    fp32 = folder / "bundled.onnx"
    fp32.write_bytes(BUNDLED_ONNX.read_bytes())
    contract_path_for(fp32).write_text(contract_path_for(BUNDLED_ONNX).read_text())
    cfg = SynthConfig(frames=2)
    calibration = [[SyntheticScene(TRAIN_SCENE_SEED, s, cfg).frame(t)[0] for t in range(2)] for s in range(2)]
    # Four frames keep the test short; a percentile of so few samples is a poor range, so min-max here (the
    # shipped percentile default is measured on 64 frames by benchmarks/int8_accuracy.py).
    quantize_model(fp32, int8_path_for(fp32), calibration, calibration="test streets", method="minmax")
    return fp32


def test_the_contract_records_precision_calibration_and_the_fp32_model(int8_model: Path) -> None:
    int8 = int8_path_for(int8_model)
    assert int8.name == "bundled.int8.onnx"
    contract = ModelContract.load(contract_path_for(int8))
    fp32 = ModelContract.load(contract_path_for(int8_model))
    assert (contract.precision, fp32.precision) == ("int8", "fp32")
    assert contract.fp32_sha256 == file_sha256(int8_model) and contract.onnx_sha256 == file_sha256(int8)
    assert contract.calibration.startswith("test streets; 4 frames; minmax")
    assert (contract.inputs, contract.outputs, contract.config) == (fp32.inputs, fp32.outputs, fp32.config)


def test_the_graph_is_qdq_with_no_float_convolution_left(int8_model: Path) -> None:
    int8 = int8_path_for(int8_model)
    check_quantized_graph(int8)
    assert graph_precision(int8) == "int8" and graph_precision(int8_model) == "fp32"
    assert float_ops_left(int8) == [] and len(float_ops_left(int8_model)) > 10  # every fp32 Conv is float
    with pytest.raises(QuantizeError, match="no QuantizeLinear"):
        check_quantized_graph(int8_model)


def test_int8_agrees_with_fp32_on_held_out_frames(int8_model: Path) -> None:
    fp32 = Pipeline(open_backend(int8_model, backend="onnxruntime"))
    int8_backend = open_backend(int8_model, backend="onnxruntime", precision="int8")
    assert "int8" in int8_backend.describe()
    int8 = Pipeline(int8_backend)
    scene = SyntheticScene(0, 1003, SynthConfig(frames=3))
    agreement = RunAgreement()
    for t in range(3):
        image = scene.frame(t)[0]
        agreement.add(fp32.step(image, stamp=0.1 * t), int8.step(image, stamp=0.1 * t))
    summary = agreement.summary()
    assert summary["things"] >= 6, "nothing to compare"
    # Measured on this model (cycle 10) and frames: 99.7 % of classes and 99.5 % of panoptic cells equal, 19 of
    # 21 identities kept (each thing is ~5 % here; benchmarks/int8_accuracy.py measures it on 100 frames).
    assert summary["class_cells_equal_pct"] >= 97.0 and summary["panoptic_cells_equal_pct"] >= 95.0, summary
    assert summary["track_identity_kept_pct"] >= 85.0, summary


def test_precision_picks_the_file_or_says_why_not(int8_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import vknet_model.backends as backends

    int8 = int8_path_for(int8_model)
    assert resolve_precision(int8_model, "int8") == (int8, "fp32")
    assert resolve_precision(int8, "int8") == (int8, "fp32") and resolve_precision(int8, "auto") == (int8, "fp32")
    assert resolve_precision(int8_model, "fp32") == (int8_model, "fp32")
    with pytest.raises(BackendError, match="is an int8 model"):
        resolve_precision(int8, "fp32")
    with pytest.raises(BackendError, match="no int8 model beside"):
        resolve_precision(BUNDLED_ONNX, "int8")
    with pytest.raises(BackendError, match="no bf16 CPU kernels"):
        resolve_precision(int8_model, "bf16")
    with pytest.raises(BackendError, match="is a checkpoint"):
        resolve_precision(BUNDLED_MODEL, "int8")
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(BackendError, match="native bf16"):
        resolve_precision(BUNDLED_MODEL, "bf16")
    assert resolve_precision(BUNDLED_MODEL, "bf16", device="cuda") == (BUNDLED_MODEL, "bf16")
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision(BUNDLED_MODEL, "bf16") == (BUNDLED_MODEL, "bf16")
    assert open_backend(BUNDLED_MODEL, precision="bf16").precision == "bf16"  # type: ignore[attr-defined]


def test_a_contract_that_lies_about_precision_is_refused(int8_model: Path, tmp_path: Path) -> None:
    int8 = int8_path_for(int8_model)
    copy = tmp_path / "edited.onnx"
    copy.write_bytes(int8.read_bytes())
    values = json.loads(contract_path_for(int8).read_text())
    values["precision"] = "fp32"
    contract_path_for(copy).write_text(json.dumps(values))
    with pytest.raises(BackendError, match="is an int8 graph but its contract says fp32"):
        open_backend(copy, backend="onnxruntime")
    values["precision"] = "int4"
    contract_path_for(copy).write_text(json.dumps(values))
    with pytest.raises(Exception, match="precision 'int4' is not one of"):
        open_backend(copy, backend="onnxruntime")


def test_quantising_refuses_what_it_cannot_use(int8_model: Path, tmp_path: Path) -> None:
    frames = [[SyntheticScene(TRAIN_SCENE_SEED, 0, SynthConfig(frames=1)).frame(0)[0]]]
    with pytest.raises(QuantizeError, match="already int8"):
        quantize_model(int8_path_for(int8_model), tmp_path / "x.onnx", frames, calibration="t")
    with pytest.raises(QuantizeError, match="must not overwrite"):
        quantize_model(int8_model, int8_model, frames, calibration="t")
    with pytest.raises(QuantizeError, match="calibration method must be one of"):
        quantize_model(int8_model, tmp_path / "x.onnx", frames, calibration="t", method="entropy")
    with pytest.raises(QuantizeError, match="no calibration frames"):
        quantize_model(int8_model, tmp_path / "x.onnx", [], calibration="t")
    with pytest.raises(QuantizeError, match="RGB uint8"):
        quantize_model(int8_model, tmp_path / "x.onnx", [[np.zeros((4, 4), np.float32)]], calibration="t")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(QuantizeError, match="cannot quantise"):
        quantize_model(broken, tmp_path / "y.onnx", frames, calibration="t")


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_cli import main

    assert main(["quantize", "--model", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["quantize", "--calib", str(tmp_path / "nowhere")]) == 2
    assert "no such folder or bag" in capsys.readouterr().err
    assert main(["quantize", "--frames", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
