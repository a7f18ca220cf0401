"""Native TensorRT backend: builds an engine from the exported ONNX once per GPU/TensorRT version, caches it, runs it.

Written against the documented TensorRT 10.x Python API (``tensorrt>=10,<12``): ``create_network(0)``,
``build_serialized_network``, name-based I/O tensors and ``execute_async_v3``. On 11.x the builder's FP16 flag
no longer exists: fp16 then needs a mixed-precision ONNX (e.g. converted with ModelOpt AutoCast), so this
backend logs that and builds the fp32 graph as is.

Everything that decides something (which dtype a TensorRT type is, whether a cache may be used, when to rebuild,
whether the engine's I/O fits the contract) is a plain function so it is tested on machines without TensorRT;
the code that touches ``tensorrt`` itself is kept to :func:`build_engine` and :class:`TensorRTBackend`.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import torch

from vknet_model.backends.base import Backend, BackendError
from vknet_model.contract import ContractError, ModelContract, TensorSpec, check_io, load_verified_contract
from vknet_model.engine_cache import (
    EngineKey,
    atomic_write,
    default_cache_dir,
    engine_paths,
    ensure_cached,
    sidecar_path_for,
    timing_cache_path,
)
from vknet_model.network import INPUT_NAMES, OUTPUT_NAMES, VKNetOutput

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_WORKSPACE_BYTES = 4 << 30
SUPPORTED_TENSORRT = ">=10,<12"
_SUPPORTED_MAJORS = (10, 11)
_ALTERNATIVE = "use `--backend onnxruntime` (the same ONNX file) instead"

# TensorRT DataType member name -> our (numpy) dtype name. Keyed by name so that this table is importable and
# testable without TensorRT, and so a type this table does not know (FP8, INT4) reads clearly in a mismatch.
TRT_DTYPE_NAMES: dict[str, str] = {
    "FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool",
    "UINT8": "uint8", "INT8": "int8", "BF16": "bfloat16",
}
TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool, "uint8": torch.uint8, "int8": torch.int8, "bfloat16": torch.bfloat16,
}
# TensorRT log severity name -> Python logging level (None: dropped). TensorRT's INFO is chatty during a build.
_SEVERITY_LEVELS: dict[str, int | None] = {
    "INTERNAL_ERROR": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
    "INFO": logging.DEBUG, "VERBOSE": None,
}


class TensorRTUnavailableError(BackendError):
    """TensorRT or CUDA is missing on this machine (as opposed to a model that fails to build)."""


# ---------------------------------------------------------------------------------------------------------------------
# Plain decisions (no TensorRT needed; covered by tests/model/test_engine_cache.py)


def enum_name(value: Any) -> str:
    """``trt.DataType.HALF`` -> "HALF" (pybind11 enums have ``.name``; ``str()`` gives "DataType.HALF")."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else str(value).rsplit(".", 1)[-1]


def trt_dtype_name(dtype: Any) -> str:
    """Our dtype name for a TensorRT ``DataType`` (or its member name); unknown types become "tensorrt:<NAME>"."""
    name = enum_name(dtype)
    return TRT_DTYPE_NAMES.get(name, f"tensorrt:{name}")


def tensorrt_major(version: str) -> int:
    """Major version of a ``tensorrt.__version__`` string ("10.12.0.36" -> 10); 0 when unparseable."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0


def check_tensorrt_version(version: str) -> None:
    """Refuse TensorRT < 10 (different API); warn on an untested newer major."""
    major = tensorrt_major(version)
    if major < _SUPPORTED_MAJORS[0]:
        raise TensorRTUnavailableError(f"TensorRT {version} is too old: vknet needs tensorrt{SUPPORTED_TENSORRT} "
                                       f"(the 10.x API); upgrade it or {_ALTERNATIVE}")
    if major > _SUPPORTED_MAJORS[-1]:
        _LOG.warning("TensorRT %s is newer than the versions vknet is tested with (%s)", version, SUPPORTED_TENSORRT)


def resolve_precision(fp16: bool, has_fp16_flag: bool) -> str:
    """The precision the builder will really use: "fp16" only if requested and the FP16 flag exists.

    TensorRT 11 removed ``BuilderFlag.FP16`` (networks are strongly typed: precision comes from the ONNX), so
    on 11.x an fp16 request builds the fp32 graph, and the cache key must say fp32.
    """
    if fp16 and not has_fp16_flag:
        _LOG.warning("this TensorRT has no BuilderFlag.FP16 (removed in 11.0): fp16 needs a mixed-precision ONNX "
                     "(e.g. converted with ModelOpt AutoCast); building in fp32")
        return "fp32"
    return "fp16" if fp16 else "fp32"


def engine_precision(fp16: bool, has_fp16_flag: bool, graph_precision: str) -> str:
    """The cache key's precision: :func:`resolve_precision`'s, marked int8 for a quantised (QDQ) graph."""
    precision = resolve_precision(fp16, has_fp16_flag)
    if graph_precision == "int8":
        return "int8_fp16" if precision == "fp16" else "int8"
    return precision


def engine_key_for(contract: ModelContract, onnx_sha256: str, *, gpu_name: str, compute_capability: str,
                   tensorrt_version: str, precision: str) -> EngineKey:
    """The cache key of an engine for ``contract``'s model on one GPU and TensorRT version."""
    return EngineKey(onnx_sha256=onnx_sha256, gpu_name=gpu_name, compute_capability=compute_capability,
                     tensorrt_version=tensorrt_version, precision=precision,
                     input_shapes=tuple((spec.name, spec.shape) for spec in contract.inputs))


def order_like(want: Sequence[TensorSpec], got: Sequence[TensorSpec]) -> list[TensorSpec]:
    """``got`` in the order of ``want`` when both name the same tensors (TensorRT need not keep graph order).

    With different names ``got`` is returned unchanged, so that :func:`check_io` reports the names.
    """
    by_name = {spec.name: spec for spec in got}
    if len(by_name) != len(got) or set(by_name) != {spec.name for spec in want}:
        return list(got)
    return [by_name[spec.name] for spec in want]


def check_engine_io(contract: ModelContract, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                    what: str) -> None:
    """Raise ContractError unless the engine's I/O equals the contract's (names, static shapes, dtypes).

    The contract must also use the names, in order, that :class:`VKNetOutput` and ``infer`` rely on.
    """
    if [s.name for s in contract.inputs] != list(INPUT_NAMES) or [s.name for s in contract.outputs] != list(
            OUTPUT_NAMES):
        raise ContractError(f"{what}: contract I/O names {[s.name for s in contract.inputs]} -> "
                            f"{[s.name for s in contract.outputs]} are not {list(INPUT_NAMES)} -> "
                            f"{list(OUTPUT_NAMES)} (exported by another vknet version? re-export it)")
    check_io(contract, order_like(contract.inputs, inputs), order_like(contract.outputs, outputs), what=what)


def check_feed_shapes(specs: Sequence[TensorSpec], values: Sequence[torch.Tensor]) -> None:
    """Raise BackendError when an input does not have its contract shape (``copy_`` would broadcast silently)."""
    for spec, value in zip(specs, values, strict=True):
        if tuple(value.shape) != spec.shape:
            raise BackendError(f"input {spec.name}: shape {list(value.shape)}, the engine takes {list(spec.shape)}")


class TrtMessageSink:
    """Forwards TensorRT log messages to Python logging and keeps the errors for exception messages.

    TensorRT reports *why* a parse, build or deserialization failed only through its logger, while the API call
    just returns False or None; without keeping these lines the exception would say nothing useful.
    """

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._lock = threading.Lock()  # TensorRT may log from its own threads

    def log(self, severity: Any, message: str) -> None:
        name = enum_name(severity)
        level = _SEVERITY_LEVELS.get(name, logging.WARNING)
        if level is None:
            return
        if level >= logging.ERROR:
            with self._lock:
                self.errors.append(message)
        _LOG.log(level, "TensorRT: %s", message)

    def take_errors(self) -> str:
        """The errors logged since the last call, joined for a message ("" if none)."""
        with self._lock:
            text, self.errors = " | ".join(self.errors), []
        return text


@dataclass
class _Phase:
    parent: str | None
    steps: int
    started: float
    bar: Any = None


class BuildProgress:
    """Logs TensorRT build phases with step counts and times (and draws tqdm bars on a terminal).

    A build takes minutes with no other output; users who see nothing assume a hang and kill it. Top-level
    phases are logged at INFO, nested ones at DEBUG. Ctrl-C inside a callback cancels the build cleanly
    (TensorRT is told to stop by returning False) instead of unwinding through C++.
    """

    def __init__(self, *, bars: bool | None = None) -> None:
        self.cancelled = False
        self._phases: dict[str, _Phase] = {}
        self._tqdm: Any = None
        if bars is None:
            bars = sys.stderr.isatty()
        if bars:
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional: logging alone still shows progress
                tqdm = None
            self._tqdm = tqdm

    def _depth(self, parent: str | None) -> int:
        depth = 0
        while parent is not None and depth < 32:
            depth += 1
            phase = self._phases.get(parent)
            parent = phase.parent if phase else None
        return depth

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        try:
            depth = self._depth(parent_phase)
            phase = _Phase(parent_phase, int(num_steps), time.monotonic())
            if self._tqdm is not None:
                phase.bar = self._tqdm(total=phase.steps, desc=phase_name, position=depth, leave=False)
            self._phases[phase_name] = phase
            _LOG.log(logging.INFO if depth == 0 else logging.DEBUG, "TensorRT build: %s%s started (%d steps)",
                     "  " * depth, phase_name, phase.steps)
        except KeyboardInterrupt:
            self.cancelled = True

    def step_complete(self, phase_name: str, step: int) -> bool:
        try:
            phase = self._phases.get(phase_name)
            if phase is not None:
                if phase.bar is not None:
                    phase.bar.update(max(0, step - phase.bar.n))
                level = logging.INFO if phase.parent is None else logging.DEBUG
                _LOG.log(level, "TensorRT build: %s step %d/%d", phase_name, step, phase.steps)
        except KeyboardInterrupt:
            self.cancelled = True
        return not self.cancelled

    def phase_finish(self, phase_name: str) -> None:
        try:
            phase = self._phases.pop(phase_name, None)
            if phase is None:
                return
            if phase.bar is not None:
                phase.bar.close()
            _LOG.log(logging.INFO if phase.parent is None else logging.DEBUG, "TensorRT build: %s finished in %.1f s",
                     phase_name, time.monotonic() - phase.started)
        except KeyboardInterrupt:
            self.cancelled = True


@dataclass(frozen=True)
class PreparedEngine:
    """A valid engine on disk for one model, GPU and TensorRT version.

    Attributes:
        engine_path, sidecar_path: where the engine and its metadata are.
        key: what it was built for.
        built: True if it was built by this call (False: loaded from the cache).
        contract: the verified contract of the ONNX it was built from.
    """

    engine_path: Path
    sidecar_path: Path
    key: EngineKey
    built: bool
    contract: ModelContract = field(repr=False)


def deserialize_or_rebuild(prepare: Callable[[bool], PreparedEngine], deserialize: Callable[[Path], T | None],
                           failure_detail: Callable[[], str] = lambda: "") -> tuple[PreparedEngine, T]:
    """Load the engine; if TensorRT refuses a *cached* one, rebuild it once; then give up loudly.

    ``deserialize_cuda_engine`` returns None instead of raising, and the sidecar cannot capture every reason
    (e.g. a CUDA driver change), so a matching cache may still be refused: rebuilding it once fixes that case.
    An engine that was just built and is refused will not improve by building it again.

    Args:
        prepare: ``prepare(force)`` makes sure an engine is on disk (``force`` rebuilds it).
        deserialize: engine path -> engine, or None when TensorRT refuses it.
        failure_detail: TensorRT's error messages, appended to the exception.
    """
    prepared = prepare(False)
    engine = deserialize(prepared.engine_path)
    if engine is None and not prepared.built:
        _LOG.warning("TensorRT refused the cached engine %s although its metadata matches (%s); rebuilding it once",
                     prepared.engine_path, failure_detail() or "no reason given")
        prepared = prepare(True)
        engine = deserialize(prepared.engine_path)
    if engine is None:
        raise BackendError(f"TensorRT cannot deserialize the engine it just built ({prepared.engine_path}): "
                           f"{failure_detail() or 'no reason given'}; {_ALTERNATIVE}")
    return prepared, engine


# ---------------------------------------------------------------------------------------------------------------------
# Environment and TensorRT-touching code (needs TensorRT and a GPU; covered by the gpu-marked test)


def import_tensorrt() -> ModuleType:
    """Import ``tensorrt`` or raise TensorRTUnavailableError naming the alternative."""
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise TensorRTUnavailableError(f"TensorRT is not installed ({exc}); install tensorrt{SUPPORTED_TENSORRT} on a "
                                       f"machine with an NVIDIA GPU, or {_ALTERNATIVE}") from exc
    check_tensorrt_version(str(trt.__version__))
    return trt


def cuda_device(device_index: int) -> torch.device:
    """The CUDA device TensorRT will run on, or TensorRTUnavailableError."""
    if not torch.cuda.is_available():
        raise TensorRTUnavailableError(f"TensorRT needs a CUDA GPU and torch sees none (torch {torch.__version__}); "
                                       f"{_ALTERNATIVE}")
    if not 0 <= device_index < torch.cuda.device_count():
        raise TensorRTUnavailableError(f"CUDA device {device_index} does not exist "
                                       f"({torch.cuda.device_count()} visible)")
    return torch.device("cuda", device_index)


@cache
def _adapters(trt: ModuleType) -> tuple[type, type]:
    """ILogger and IProgressMonitor subclasses that delegate to the plain classes above.

    Defined lazily because their base classes exist only once ``tensorrt`` is imported.
    """

    class SinkLogger(trt.ILogger):  # type: ignore[name-defined]
        def __init__(self, sink: TrtMessageSink) -> None:
            trt.ILogger.__init__(self)
            self.sink = sink

        def log(self, severity: Any, msg: str) -> None:
            self.sink.log(severity, msg)

    class ProgressMonitor(trt.IProgressMonitor):  # type: ignore[name-defined]
        def __init__(self, progress: BuildProgress) -> None:
            trt.IProgressMonitor.__init__(self)
            self.progress = progress

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.progress.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return self.progress.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            self.progress.phase_finish(phase_name)

    return SinkLogger, ProgressMonitor


def build_engine(onnx_path: str | Path, *, fp16: bool, workspace_bytes: int, timing_cache_path: Path | None,
                 int8: bool = False) -> bytes:
    """Parse ``onnx_path`` and build a serialized TensorRT engine (minutes).

    Args:
        fp16: allow fp16 kernels (ignored, with a warning, where ``BuilderFlag.FP16`` no longer exists).
        int8: the graph is a QDQ int8 one (explicit quantisation: no calibrator; the INT8 flag where it exists).
        workspace_bytes: builder scratch memory limit.
        timing_cache_path: kernel timing cache read before and written after the build (None: no cache).

    Raises:
        BackendError: the parser or builder failed; the message carries TensorRT's error lines.
        KeyboardInterrupt: the user pressed Ctrl-C during the build.
    """
    trt = import_tensorrt()
    logger_cls, monitor_cls = _adapters(trt)
    onnx_path = Path(onnx_path)
    _LOG.warning("building TensorRT engine for %s (%s, TensorRT %s): this takes minutes (once per GPU/TensorRT "
                 "version)", onnx_path, "fp16" if fp16 else "fp32", trt.__version__)
    sink = TrtMessageSink()
    trt_logger = logger_cls(sink)
    # The logger must outlive builder, network, parser and config: they live in the callee's frame only.
    return _build(trt, trt_logger, sink, monitor_cls, onnx_path, fp16=fp16, workspace_bytes=workspace_bytes,
                  timing_cache_path=timing_cache_path, int8=int8)


def _build(trt: ModuleType, trt_logger: Any, sink: TrtMessageSink, monitor_cls: type, onnx_path: Path, *,
           fp16: bool, workspace_bytes: int, timing_cache_path: Path | None, int8: bool = False) -> bytes:
    """The body of :func:`build_engine`."""
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # EXPLICIT_BATCH is implied in 10.x and gone in 11.x
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {' | '.join(errors) or sink.take_errors()}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if resolve_precision(fp16, hasattr(trt.BuilderFlag, "FP16")) == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    if int8 and hasattr(trt.BuilderFlag, "INT8"):  # 10.x; 11.x reads int8 from the QDQ graph (strongly typed)
        config.set_flag(trt.BuilderFlag.INT8)
    if timing_cache_path is not None:
        blob = timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
        try:
            timing_cache = config.create_timing_cache(blob)
        except (RuntimeError, TypeError, ValueError):
            timing_cache = None
        if timing_cache is None and blob:  # a damaged cache file only costs speed: start from an empty one
            _LOG.warning("ignoring unreadable TensorRT timing cache %s", timing_cache_path)
            timing_cache = config.create_timing_cache(b"")
        if timing_cache is not None:
            config.set_timing_cache(timing_cache, False)
    progress = BuildProgress()
    monitor = monitor_cls(progress)  # referenced until the build returns
    config.progress_monitor = monitor
    started = time.monotonic()
    plan = builder.build_serialized_network(network, config)
    if progress.cancelled:
        raise KeyboardInterrupt("TensorRT build cancelled")
    if plan is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path}: "
                           f"{sink.take_errors() or 'no error message'}")
    if timing_cache_path is not None:
        try:
            atomic_write(timing_cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
        except OSError as exc:  # the timing cache only speeds up the next build
            _LOG.warning("could not save the TensorRT timing cache %s: %s", timing_cache_path, exc)
    engine_bytes = bytes(memoryview(plan))
    _LOG.info("built TensorRT engine for %s in %.0f s (%.1f MB)", onnx_path, time.monotonic() - started,
              len(engine_bytes) / 1e6)
    return engine_bytes


def prepare_engine(onnx_path: str | Path, *, fp16: bool = True, cache_dir: str | Path | None = None,
                   engine_path: str | Path | None = None, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                   device_index: int = 0, force: bool = False) -> PreparedEngine:
    """Make sure a valid engine for ``onnx_path`` on this GPU and TensorRT is on disk; build it if not.

    Used by both :class:`TensorRTBackend` and ``vknet engine``, so that an engine built ahead of time is
    exactly the one the backend will load.

    Args:
        cache_dir: engine cache (default :func:`default_cache_dir`); also holds the timing cache.
        engine_path: an explicit engine file instead of the cache (its sidecar is ``<engine>.json``).
        force: rebuild even if a valid engine exists.

    Raises:
        TensorRTUnavailableError: no TensorRT or no CUDA GPU.
        BackendError, ContractError: a missing or foreign model, or a failed build.
    """
    trt = import_tensorrt()
    device = cuda_device(device_index)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise BackendError(f"ONNX model not found: {onnx_path}")
    contract, sha = load_verified_contract(onnx_path)
    major, minor = torch.cuda.get_device_capability(device)
    gpu_name = torch.cuda.get_device_name(device)
    precision = engine_precision(fp16, hasattr(trt.BuilderFlag, "FP16"), contract.precision)
    key = engine_key_for(contract, sha, gpu_name=gpu_name, compute_capability=f"{major}.{minor}",
                         tensorrt_version=str(trt.__version__), precision=precision)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    model_name = None if engine_path is not None else onnx_path.stem
    if engine_path is not None:
        paths = (Path(engine_path), sidecar_path_for(engine_path))
    else:
        paths = engine_paths(cache_root, key, model_name=onnx_path.stem)
    timing = timing_cache_path(cache_root, gpu_name, key.tensorrt_version)

    def build() -> bytes:
        return build_engine(onnx_path, fp16=precision.endswith("fp16"), workspace_bytes=workspace_bytes,
                            timing_cache_path=timing, int8=contract.precision == "int8")

    try:
        with torch.cuda.device(device):  # TensorRT builds for the current CUDA device
            built = ensure_cached(paths[0], paths[1], key, build, force=force, model_name=model_name)
    except OSError as exc:
        raise BackendError(f"cannot write the TensorRT engine to {paths[0]}: {exc}; choose a writable cache with "
                           f"--cache-dir or VKNET_CACHE_DIR") from exc
    return PreparedEngine(paths[0], paths[1], key, built, contract)


def _require(ok: bool, what: str) -> None:
    """TensorRT reports many failures as a False return value: turn them into exceptions."""
    if not ok:
        raise BackendError(f"TensorRT: {what} failed")


class TensorRTBackend(Backend):
    """Runs the exported network as a TensorRT engine on one CUDA device.

    The engine is built on first use (minutes) and cached; see :func:`prepare_engine`. Input and output buffers
    are allocated once and bound to the execution context at construction. ``infer`` copies the inputs into
    them, runs on a private CUDA stream ordered against the caller's current stream, and returns *copies* of
    the outputs: the caller feeds ``kernels`` back as ``prev_kernels``, which must not alias the buffer the
    next run writes, and results must stay valid after the next call, as with the other backends.
    One backend (one execution context) per concurrent caller.
    """

    name = "tensorrt"

    def __init__(self, onnx_path: str | Path, *, fp16: bool = True, cache_dir: str | Path | None = None,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, device_index: int = 0,
                 engine_path: str | Path | None = None, force_rebuild: bool = False) -> None:
        trt = import_tensorrt()
        self.device = cuda_device(device_index)
        onnx_path = Path(onnx_path)
        self._sink = TrtMessageSink()
        self._trt_logger = _adapters(trt)[0](self._sink)  # must outlive runtime, engine and context
        self._runtime = trt.Runtime(self._trt_logger)

        def prepare(force: bool) -> PreparedEngine:
            return prepare_engine(onnx_path, fp16=fp16, cache_dir=cache_dir, engine_path=engine_path,
                                  workspace_bytes=workspace_bytes, device_index=device_index,
                                  force=force or force_rebuild)

        def deserialize(path: Path) -> Any:
            with torch.cuda.device(self.device):
                return self._runtime.deserialize_cuda_engine(path.read_bytes())

        prepared, self._engine = deserialize_or_rebuild(prepare, deserialize, self._sink.take_errors)
        self.contract = prepared.contract
        self.engine_path = prepared.engine_path
        self.key = prepared.key
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            spec = TensorSpec(name, tuple(int(d) for d in self._engine.get_tensor_shape(name)),
                              trt_dtype_name(self._engine.get_tensor_dtype(name)))
            (inputs if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        check_engine_io(self.contract, inputs, outputs, what=f"TensorRT engine {self.engine_path}")

        with torch.cuda.device(self.device):
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise BackendError(f"TensorRT could not create an execution context (out of GPU memory?): "
                                   f"{self._sink.take_errors()}")
            self._stream = torch.cuda.Stream(self.device)
        self._inputs = [self._bind(spec, is_input=True) for spec in self.contract.inputs]
        self._outputs = [self._bind(spec, is_input=False) for spec in self.contract.outputs]
        _LOG.info("TensorRT engine %s loaded (%s, key %s)", self.engine_path, self.key.precision, self.key.digest())

    def _bind(self, spec: TensorSpec, *, is_input: bool) -> torch.Tensor:
        """Allocate the buffer for one I/O tensor and give its address to the context (checked)."""
        if is_input:
            _require(self._context.set_input_shape(spec.name, spec.shape), f"set_input_shape({spec.name})")
        else:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(spec.name))
            if shape != spec.shape:
                raise ContractError(f"TensorRT output {spec.name} has shape {list(shape)} in the execution context, "
                                    f"contract says {list(spec.shape)}")
        buffer = torch.empty(spec.shape, dtype=TORCH_DTYPES[spec.dtype], device=self.device)
        _require(self._context.set_tensor_address(spec.name, buffer.data_ptr()), f"set_tensor_address({spec.name})")
        return buffer

    def infer(self, image: torch.Tensor, prev_kernels: torch.Tensor, use_prev: torch.Tensor,
              thresholds: torch.Tensor) -> VKNetOutput:
        values = (image, prev_kernels, use_prev, thresholds)  # INPUT_NAMES order, checked at load
        check_feed_shapes(self.contract.inputs, values)
        current = torch.cuda.current_stream(self.device)
        self._stream.wait_stream(current)  # inputs were produced on the caller's stream
        with torch.cuda.stream(self._stream):
            for buffer, value in zip(self._inputs, values, strict=True):
                buffer.copy_(value, non_blocking=True)  # also converts device and dtype
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise BackendError(f"TensorRT execute_async_v3 failed: {self._sink.take_errors() or 'no reason'}")
        current.wait_stream(self._stream)
        # Clone on the caller's stream; the next infer() waits for it before overwriting the buffers.
        return VKNetOutput(*(buffer.clone() for buffer in self._outputs))
