"""TensorRT engine cache and backend decisions, tested on CPU without TensorRT.

Everything that decides something (cache key, file names, when a cached engine may be trusted, when to
rebuild, dtype mapping, I/O checks) is plain Python and tested here. Only the last test needs TensorRT and a
GPU; it is skipped with the reason elsewhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from vknet_model import engine_cli
from vknet_model.backends.base import BackendError
from vknet_model.backends.tensorrt_backend import (
    TORCH_DTYPES,
    TRT_DTYPE_NAMES,
    BuildProgress,
    PreparedEngine,
    TensorRTBackend,
    TensorRTUnavailableError,
    TrtMessageSink,
    check_engine_io,
    check_feed_shapes,
    check_tensorrt_version,
    deserialize_or_rebuild,
    engine_key_for,
    enum_name,
    order_like,
    resolve_precision,
    tensorrt_major,
    trt_dtype_name,
)
from vknet_model.config import resolve_config
from vknet_model.contract import ContractError, ModelContract, contract_for, contract_path_for, file_sha256
from vknet_model.engine_cache import (
    CacheAction,
    CacheState,
    CacheStatus,
    EngineKey,
    check_cached,
    decide,
    default_cache_dir,
    engine_paths,
    ensure_cached,
    sanitize_name,
    sidecar_path_for,
    timing_cache_path,
    write_cache,
)

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
ENGINE = b"\x00plan" * 100

KEY = EngineKey(
    onnx_sha256="ab" * 32,
    gpu_name="NVIDIA A100-SXM4-80GB",
    compute_capability="8.0",
    tensorrt_version="10.12.0.36",
    precision="fp16",
    input_shapes=(("image", (1, 3, 64, 128)), ("prev_kernels", (1, 10, 32)), ("use_prev", (1,)),
                  ("thresholds", (3,))),
)


@pytest.fixture(scope="module")
def contract() -> ModelContract:
    return contract_for(resolve_config("tiny"))


@pytest.fixture
def cached(tmp_path: Path) -> tuple[Path, Path]:
    engine, sidecar = engine_paths(tmp_path, KEY)
    write_cache(ENGINE, engine, sidecar, KEY)
    return engine, sidecar


# --- key ---------------------------------------------------------------------------------------------------------


def test_digest_is_stable_and_round_trips() -> None:
    copy = EngineKey.from_dict(json.loads(json.dumps(KEY.to_dict())))
    assert copy == KEY
    assert copy.digest() == KEY.digest()
    assert len(KEY.digest()) == 16 and int(KEY.digest(), 16) >= 0
    # Pinned: a change here would orphan every user's cached engines; change it only on purpose.
    assert KEY.digest() == "a7f2f245061c7371"


@pytest.mark.parametrize(("field", "value"), [
    ("onnx_sha256", "cd" * 32), ("gpu_name", "NVIDIA H100 80GB HBM3"), ("compute_capability", "9.0"),
    ("tensorrt_version", "10.13.0.35"), ("precision", "fp32"),
    ("input_shapes", (("image", (1, 3, 64, 64)), ("prev_kernels", (1, 10, 32)), ("use_prev", (1,)),
                      ("thresholds", (3,)))),
])
def test_digest_changes_with_each_field(field: str, value: Any) -> None:
    assert dataclasses.replace(KEY, **{field: value}).digest() != KEY.digest()


def test_key_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="precision"):
        dataclasses.replace(KEY, precision="int4")
    broken = KEY.to_dict()
    del broken["gpu_name"]
    with pytest.raises(ValueError, match="malformed"):
        EngineKey.from_dict(broken)
    with pytest.raises(ValueError, match="strings"):
        EngineKey.from_dict({**KEY.to_dict(), "compute_capability": 8.0})


def test_engine_key_for_takes_input_shapes_from_contract(contract: ModelContract) -> None:
    key = engine_key_for(contract, "ab" * 32, gpu_name="g", compute_capability="9.0", tensorrt_version="10.0.1",
                         precision="fp32")
    assert [name for name, _ in key.input_shapes] == ["image", "prev_kernels", "use_prev", "thresholds"]
    assert key.input_shapes[0][1] == contract.inputs[0].shape


# --- paths -------------------------------------------------------------------------------------------------------


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VKNET_CACHE_DIR", str(tmp_path / "override"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "override"
    monkeypatch.delenv("VKNET_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "vknet" / "engines"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vknet" / "engines"


def test_engine_paths_are_sanitised_and_readable(tmp_path: Path) -> None:
    key = dataclasses.replace(KEY, gpu_name="NVIDIA GeForce RTX 4090 / (laptop)")
    engine, sidecar = engine_paths(tmp_path, key, model_name="my model v2")
    assert engine.parent == tmp_path
    assert engine.name == f"my_model_v2-NVIDIA_GeForce_RTX_4090_laptop-trt10.12.0.36-fp16-{key.digest()}.engine"
    assert sidecar == sidecar_path_for(engine) == engine.with_name(engine.name + ".json")
    assert sanitize_name("../../etc") == "etc" and sanitize_name("???") == "unknown"
    assert engine_paths(tmp_path, KEY)[0] != engine


def test_sidecar_never_collides_with_model_contract(tmp_path: Path) -> None:
    assert sidecar_path_for(tmp_path / "model.engine") != contract_path_for(tmp_path / "model.onnx")


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path: Path) -> None:
    path = timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "10.12.0.36")
    assert path == tmp_path / "timing-NVIDIA_H100_80GB_HBM3-trt10.12.0.36.cache"
    assert timing_cache_path(tmp_path, "NVIDIA A100", "10.12.0.36") != path
    assert timing_cache_path(tmp_path, "NVIDIA H100 80GB HBM3", "10.13.0.35") != path


# --- check_cached ------------------------------------------------------------------------------------------------


def test_missing(tmp_path: Path) -> None:
    engine, sidecar = engine_paths(tmp_path, KEY)
    assert check_cached(engine, sidecar, KEY).state is CacheState.MISSING


def test_valid(cached: tuple[Path, Path]) -> None:
    status = check_cached(*cached, KEY)
    assert status.state is CacheState.VALID, status.reason


def test_stale_gpu_names_the_change(cached: tuple[Path, Path]) -> None:
    status = check_cached(*cached, dataclasses.replace(KEY, gpu_name="NVIDIA H100"))
    assert status.state is CacheState.STALE
    assert status.reason == "GPU changed: NVIDIA A100-SXM4-80GB -> NVIDIA H100"


def test_stale_tensorrt_version_and_capability(cached: tuple[Path, Path]) -> None:
    status = check_cached(*cached, dataclasses.replace(KEY, tensorrt_version="10.13.0.35", compute_capability="9.0"))
    assert status.state is CacheState.STALE
    assert "TensorRT version changed: 10.12.0.36 -> 10.13.0.35" in status.reason
    assert "compute capability changed: 8.0 -> 9.0" in status.reason


def test_stale_model_precision_and_shapes(cached: tuple[Path, Path]) -> None:
    other = dataclasses.replace(KEY, onnx_sha256="cd" * 32, precision="fp32",
                                input_shapes=(("image", (1, 3, 32, 32)),))
    reason = check_cached(*cached, other).reason
    assert "ONNX model changed: abababababab -> cdcdcdcdcdcd" in reason
    assert "precision changed: fp16 -> fp32" in reason
    assert "input shapes changed" in reason and "image[1, 3, 32, 32]" in reason


def test_missing_explains_engines_built_for_another_setup(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_cache(ENGINE, *engine_paths(tmp_path, KEY, "model"), KEY)
    other_model = dataclasses.replace(KEY, gpu_name="other")
    write_cache(ENGINE, *engine_paths(tmp_path, other_model, "model-v2"), other_model)  # "model-*" but not ours
    new = dataclasses.replace(KEY, gpu_name="NVIDIA H100")
    status = check_cached(*engine_paths(tmp_path, new, "model"), new, model_name="model")
    assert status.state is CacheState.MISSING
    assert len(status.superseded) == 1
    assert "GPU changed: NVIDIA A100-SXM4-80GB -> NVIDIA H100" in status.superseded[0]
    assert check_cached(*engine_paths(tmp_path, new, "model"), new).superseded == ()
    with caplog.at_level(logging.INFO, logger="vknet_model.engine_cache"):
        assert decide(status) is CacheAction.BUILD
    assert any(r.levelno == logging.WARNING and "NVIDIA H100" in r.getMessage() for r in caplog.records)


def test_corrupt_bad_json(cached: tuple[Path, Path]) -> None:
    cached[1].write_text("{not json")
    status = check_cached(*cached, KEY)
    assert status.state is CacheState.CORRUPT and "unreadable sidecar" in status.reason


@pytest.mark.parametrize("content", [
    [1, 2], {"format": "something-else", "version": 1}, {"format": "vknet-engine-cache"},
])
def test_corrupt_foreign_sidecar(cached: tuple[Path, Path], content: object) -> None:
    cached[1].write_text(json.dumps(content))
    assert check_cached(*cached, KEY).state is CacheState.CORRUPT


def test_corrupt_malformed_key_in_sidecar(cached: tuple[Path, Path]) -> None:
    meta = json.loads(cached[1].read_text())
    meta["key"]["input_shapes"] = "image"
    cached[1].write_text(json.dumps(meta))
    assert check_cached(*cached, KEY).state is CacheState.CORRUPT


def test_corrupt_missing_sidecar(cached: tuple[Path, Path]) -> None:
    cached[1].unlink()
    status = check_cached(*cached, KEY)
    assert status.state is CacheState.CORRUPT and "provenance" in status.reason


def test_corrupt_truncated_engine(cached: tuple[Path, Path]) -> None:
    cached[0].write_bytes(ENGINE[:37])
    status = check_cached(*cached, KEY)
    assert status.state is CacheState.CORRUPT and "truncated" in status.reason and "37 bytes" in status.reason


def test_corrupt_zero_byte_engine(cached: tuple[Path, Path]) -> None:
    cached[0].write_bytes(b"")
    status = check_cached(*cached, KEY)
    assert status.state is CacheState.CORRUPT and "empty" in status.reason


def test_corrupt_sha_mismatch(cached: tuple[Path, Path]) -> None:
    cached[0].write_bytes(ENGINE[:-1] + b"X")
    status = check_cached(*cached, KEY)
    assert status.state is CacheState.CORRUPT and "sha256" in status.reason


# --- write_cache -------------------------------------------------------------------------------------------------


def test_write_cache_is_atomic_and_overwrites(tmp_path: Path) -> None:
    engine, sidecar = engine_paths(tmp_path / "new" / "dir", KEY)
    write_cache(ENGINE, engine, sidecar, KEY)
    write_cache(b"second engine", engine, sidecar, KEY)
    assert engine.read_bytes() == b"second engine"
    meta = json.loads(sidecar.read_text())
    assert meta["engine_size"] == len(b"second engine") and meta["key"] == KEY.to_dict()
    assert meta["digest"] == KEY.digest() and meta["vknet_version"] and meta["created"]
    assert sorted(p.name for p in engine.parent.iterdir()) == sorted([engine.name, sidecar.name])
    assert check_cached(engine, sidecar, KEY).state is CacheState.VALID


def test_write_cache_failure_leaves_old_files_and_no_tmp(cached: tuple[Path, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_cache(b"new engine", *cached, KEY)
    monkeypatch.undo()
    assert cached[0].read_bytes() == ENGINE
    assert sorted(p.name for p in cached[0].parent.iterdir()) == sorted(p.name for p in cached)


def test_write_cache_refuses_empty_engine(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        write_cache(b"", *engine_paths(tmp_path, KEY), KEY)


# --- decisions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "action"), [
    (CacheState.VALID, CacheAction.LOAD), (CacheState.MISSING, CacheAction.BUILD),
    (CacheState.STALE, CacheAction.BUILD), (CacheState.CORRUPT, CacheAction.BUILD),
])
def test_decide(state: CacheState, action: CacheAction, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vknet_model.engine_cache"):
        assert decide(CacheStatus(state, "GPU changed: A -> B")) is action
        assert decide(CacheStatus(state, "x"), force=True) is CacheAction.BUILD
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if state in (CacheState.STALE, CacheState.CORRUPT):
        assert any(state.value.upper() in m and "GPU changed: A -> B" in m for m in warnings)
    else:
        assert not warnings


def test_ensure_cached_builds_reuses_and_replaces_stale(tmp_path: Path) -> None:
    calls: list[int] = []

    def build() -> bytes:
        calls.append(1)
        return ENGINE + bytes([len(calls)])

    engine, sidecar = engine_paths(tmp_path, KEY)
    assert ensure_cached(engine, sidecar, KEY, build) is True
    assert ensure_cached(engine, sidecar, KEY, build) is False
    assert len(calls) == 1
    newer = dataclasses.replace(KEY, tensorrt_version="10.13.0.35")  # same paths, as with --out
    assert ensure_cached(engine, sidecar, newer, build) is True
    assert engine.read_bytes().endswith(b"\x02")
    assert check_cached(engine, sidecar, newer).state is CacheState.VALID
    assert ensure_cached(engine, sidecar, newer, build, force=True) is True and len(calls) == 3


def _fake_prepare(tmp_path: Path, contract: ModelContract, log: list[bool]) -> Callable[[bool], PreparedEngine]:
    """A stand-in for prepare_engine: "builds" whenever forced."""
    engine, sidecar = engine_paths(tmp_path, KEY)

    def prepare(force: bool) -> PreparedEngine:
        log.append(force)
        return PreparedEngine(engine, sidecar, KEY, built=force, contract=contract)

    return prepare


def test_deserialize_uses_cached_engine(tmp_path: Path, contract: ModelContract) -> None:
    forces: list[bool] = []
    prepared, engine = deserialize_or_rebuild(_fake_prepare(tmp_path, contract, forces), lambda path: "engine")
    assert engine == "engine" and forces == [False] and not prepared.built


def test_deserialize_refused_cached_engine_is_rebuilt_once(tmp_path: Path, contract: ModelContract) -> None:
    forces: list[bool] = []
    answers = iter([None, "engine"])
    prepared, engine = deserialize_or_rebuild(_fake_prepare(tmp_path, contract, forces), lambda path: next(answers))
    assert engine == "engine" and forces == [False, True] and prepared.built


def test_deserialize_refused_twice_raises_with_tensorrt_errors(tmp_path: Path, contract: ModelContract) -> None:
    forces: list[bool] = []
    with pytest.raises(BackendError, match=r"incompatible device.*onnxruntime"):
        deserialize_or_rebuild(_fake_prepare(tmp_path, contract, forces), lambda path: None,
                               lambda: "engine generated on an incompatible device")
    assert forces == [False, True]


def test_deserialize_refused_fresh_engine_is_not_rebuilt(tmp_path: Path, contract: ModelContract) -> None:
    forces: list[bool] = []
    engine, sidecar = engine_paths(tmp_path, KEY)

    def prepare(force: bool) -> PreparedEngine:
        forces.append(force)
        return PreparedEngine(engine, sidecar, KEY, built=True, contract=contract)

    with pytest.raises(BackendError, match="just built"):
        deserialize_or_rebuild(prepare, lambda path: None)
    assert forces == [False]


# --- TensorRT-facing plain helpers ------------------------------------------------------------------------------


def test_dtype_mapping() -> None:
    expected = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
                "UINT8": "uint8", "INT8": "int8", "BF16": "bfloat16"}
    for trt_name, ours in expected.items():
        assert trt_dtype_name(trt_name) == ours
        assert trt_dtype_name(SimpleNamespace(name=trt_name)) == ours  # pybind11 enum member
    assert trt_dtype_name("FP8") == "tensorrt:FP8"
    assert set(TRT_DTYPE_NAMES.values()) <= set(TORCH_DTYPES)
    assert TORCH_DTYPES["bool"] is torch.bool and TORCH_DTYPES["bfloat16"] is torch.bfloat16


def test_enum_name_falls_back_to_str() -> None:
    class Severity:
        def __str__(self) -> str:
            return "Severity.ERROR"

    assert enum_name(Severity()) == "ERROR"


def test_a_quantised_graph_gets_an_int8_engine_key() -> None:
    from vknet_model.backends.tensorrt_backend import engine_precision

    assert engine_precision(True, True, "int8") == "int8_fp16" and engine_precision(False, True, "int8") == "int8"
    assert engine_precision(True, False, "int8") == "int8"  # TensorRT 11: no FP16 flag
    assert engine_precision(True, True, "fp32") == "fp16" and engine_precision(False, True, "fp32") == "fp32"
    assert dataclasses.replace(KEY, precision="int8").precision == "int8"


def test_resolve_precision(caplog: pytest.LogCaptureFixture) -> None:
    assert resolve_precision(True, True) == "fp16"
    assert resolve_precision(False, True) == "fp32"
    assert resolve_precision(False, False) == "fp32"
    with caplog.at_level(logging.WARNING):
        assert resolve_precision(True, False) == "fp32"
    assert "mixed-precision ONNX" in caplog.text


def test_tensorrt_version_support(caplog: pytest.LogCaptureFixture) -> None:
    assert tensorrt_major("10.12.0.36") == 10 and tensorrt_major("garbage") == 0
    check_tensorrt_version("10.0.1")
    check_tensorrt_version("11.1.0")
    with pytest.raises(TensorRTUnavailableError, match=r"too old.*onnxruntime"):
        check_tensorrt_version("8.6.1")
    with caplog.at_level(logging.WARNING):
        check_tensorrt_version("12.0.0")
    assert "newer" in caplog.text


def test_engine_io_check(contract: ModelContract) -> None:
    outputs = list(reversed(contract.outputs))  # TensorRT may list tensors in another order
    assert order_like(contract.outputs, outputs) == list(contract.outputs)
    check_engine_io(contract, list(contract.inputs), outputs, what="engine")
    half = [dataclasses.replace(s, dtype="float16") if s.name == "cls_scores" else s for s in contract.outputs]
    with pytest.raises(ContractError, match="cls_scores: dtype float16"):
        check_engine_io(contract, list(contract.inputs), half, what="engine")
    dynamic = [dataclasses.replace(s, shape=(-1, *s.shape[1:])) if s.name == "image" else s for s in contract.inputs]
    with pytest.raises(ContractError, match="image: shape"):
        check_engine_io(contract, dynamic, list(contract.outputs), what="engine")
    with pytest.raises(ContractError, match="names"):
        check_engine_io(contract, list(contract.inputs)[:-1], list(contract.outputs), what="engine")


def test_feed_shape_check(contract: ModelContract) -> None:
    values = [torch.zeros(spec.shape) for spec in contract.inputs]
    check_feed_shapes(contract.inputs, values)
    values[1] = torch.zeros(1, 1, contract.inputs[1].shape[2])  # would broadcast silently in copy_
    with pytest.raises(BackendError, match="prev_kernels"):
        check_feed_shapes(contract.inputs, values)


def test_message_sink_keeps_errors(caplog: pytest.LogCaptureFixture) -> None:
    sink = TrtMessageSink()
    with caplog.at_level(logging.DEBUG, logger="vknet_model.backends.tensorrt_backend"):
        sink.log(SimpleNamespace(name="VERBOSE"), "noise")
        sink.log(SimpleNamespace(name="WARNING"), "careful")
        sink.log(SimpleNamespace(name="ERROR"), "no importer for op X")
        sink.log(SimpleNamespace(name="INTERNAL_ERROR"), "assertion failed")
    assert "noise" not in caplog.text and "careful" in caplog.text
    assert sink.take_errors() == "no importer for op X | assertion failed"
    assert sink.take_errors() == ""


def test_build_progress_logs_phases(caplog: pytest.LogCaptureFixture) -> None:
    progress = BuildProgress(bars=False)
    with caplog.at_level(logging.INFO, logger="vknet_model.backends.tensorrt_backend"):
        progress.phase_start("Building engine", None, 3)
        progress.phase_start("Tactic search", "Building engine", 100)
        assert progress.step_complete("Tactic search", 50)
        progress.phase_finish("Tactic search")
        assert progress.step_complete("Building engine", 1)
        progress.phase_finish("Building engine")
    messages = [r.getMessage() for r in caplog.records]
    assert any("Building engine started (3 steps)" in m for m in messages)
    assert any("Building engine step 1/3" in m for m in messages)
    assert any("Building engine finished in" in m for m in messages)
    assert not any("Tactic search" in m for m in messages)  # nested phases only at DEBUG
    progress.cancelled = True
    assert progress.step_complete("Building engine", 2) is False


# --- without TensorRT --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_onnx(tmp_path: Path, contract: ModelContract) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"not really onnx")
    dataclasses.replace(contract, onnx_sha256=file_sha256(path)).save(contract_path_for(path))
    return path


@pytest.mark.skipif(HAVE_TENSORRT, reason="tests the message shown when TensorRT is missing")
def test_backend_without_tensorrt_names_alternative(fake_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="--backend onnxruntime"):
        TensorRTBackend(fake_onnx, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


@pytest.mark.skipif(HAVE_TENSORRT, reason="tests the message shown when TensorRT is missing")
def test_engine_command_without_tensorrt(fake_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    engine_cli.add_arguments(parser)
    args = parser.parse_args(["--onnx", str(fake_onnx), "--cache-dir", str(tmp_path / "cache"), "--no-fp16"])
    assert args.fp16 is False and args.workspace == 4.0
    assert engine_cli.run(args) == 2
    err = capsys.readouterr().err
    assert "TensorRT is not installed" in err and "--backend onnxruntime" in err


def test_engine_command_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    engine_cli.add_arguments(parser)
    assert engine_cli.run(parser.parse_args(["--onnx", str(tmp_path / "absent.onnx")])) == 2
    assert "not found" in capsys.readouterr().err


def test_engine_int8_needs_the_quantised_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_model.bundled import BUNDLED_ONNX

    parser = argparse.ArgumentParser()
    engine_cli.add_arguments(parser)
    assert engine_cli.run(parser.parse_args(["--onnx", str(BUNDLED_ONNX), "--int8"])) == 2
    err = capsys.readouterr().err
    assert "tiny_synth.int8.onnx not found" in err and "vknet quantize --model" in err


# --- real TensorRT -----------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_tensorrt_matches_onnxruntime_and_caches(tmp_path: Path) -> None:
    """Build a tiny engine, compare it with ONNX Runtime on two inputs, and load it again from the cache."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (CPU logic is covered above)")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from vknet_model.backends.onnxruntime_backend import OnnxRuntimeBackend
    from vknet_model.export import export_onnx
    from vknet_model.network import build_frame_net, threshold_tensor

    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    onnx_path = tmp_path / "model.onnx"
    export_onnx(build_frame_net(cfg), cfg, onnx_path)
    trt_backend = TensorRTBackend(onnx_path, fp16=False, cache_dir=tmp_path / "cache")
    ort_backend = OnnxRuntimeBackend(onnx_path)
    h, w = trt_backend.contract.input_size
    generator = torch.Generator().manual_seed(1)
    prev = trt_backend.initial_kernels()
    for use_prev in (0.0, 1.0):
        image = torch.randint(0, 256, (1, 3, h, w), dtype=torch.uint8, generator=generator)
        flag = torch.tensor([use_prev])
        got = trt_backend.infer(image.cuda(), prev, flag.cuda(), threshold_tensor(cfg.postprocess, "cuda"))
        want = ort_backend.infer(image, prev.cpu(), flag, threshold_tensor(cfg.postprocess))
        for name, a, b in zip(want._fields, got, want, strict=True):
            assert a.is_cuda and a.dtype == b.dtype, name
            if b.is_floating_point():  # TF32 is allowed in fp32 builds
                torch.testing.assert_close(a.cpu(), b, atol=2e-2, rtol=2e-2, msg=name)
        assert (got.semantic_map.cpu() == want.semantic_map).float().mean() > 0.99
        prev = got.kernels
    again = TensorRTBackend(onnx_path, fp16=False, cache_dir=tmp_path / "cache")
    assert again.engine_path == trt_backend.engine_path
    assert check_cached(again.engine_path, sidecar_path_for(again.engine_path), again.key).state is CacheState.VALID
