"""Where TensorRT engines are cached, what they are keyed by, and when a cached engine may be trusted.

A serialized TensorRT engine only runs on the TensorRT version and GPU it was built for, and
``deserialize_cuda_engine`` gives no reason when it refuses one (it returns None). The most common user
complaint about TensorRT deployments is an engine that silently breaks after a GPU, driver or TensorRT
change, so every engine is written with a JSON *sidecar* holding the key it was built for (ONNX hash, GPU,
compute capability, TensorRT version, precision, input shapes) plus its own size and sha256. Before loading,
the key is compared field by field and the file is verified; anything that does not match is rebuilt, never
trusted, and the reason is logged in words ("GPU changed: NVIDIA A100 -> NVIDIA H100").

This module is pure Python (no TensorRT, no torch) so that all of these decisions are unit-tested on CPU.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vknet_model import __version__
from vknet_model.contract import file_sha256

_LOG = logging.getLogger(__name__)

SIDECAR_FORMAT = "vknet-engine-cache"
SIDECAR_VERSION = 1
PRECISIONS = ("fp16", "fp32", "int8", "int8_fp16")  # int8: a QDQ graph (explicit quantisation)
_DIGEST_CHARS = 16  # 64 bits: collisions between a user's handful of engines are not a concern
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_UNSAFE_VERSION_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
_FIELD_LABELS: dict[str, str] = {
    "onnx_sha256": "ONNX model changed",
    "gpu_name": "GPU changed",
    "compute_capability": "compute capability changed",
    "tensorrt_version": "TensorRT version changed",
    "precision": "precision changed",
    "input_shapes": "input shapes changed",
}

InputShapes = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized engine depends on; two engines with equal keys are interchangeable.

    Attributes:
        onnx_sha256: sha256 of the ONNX file the engine was built from.
        gpu_name: ``torch.cuda.get_device_name`` (e.g. "NVIDIA H100 80GB HBM3").
        compute_capability: "major.minor" (e.g. "9.0"); engines are specific to it.
        tensorrt_version: ``tensorrt.__version__`` (e.g. "10.12.0.36"); plans are not portable across versions.
        precision: "fp16" or "fp32", the precision actually requested from the builder; "int8" or "int8_fp16"
            for a QDQ graph from ``vknet quantize`` (the graph's scales decide what runs in int8).
        input_shapes: (name, shape) per network input, in graph order.
    """

    onnx_sha256: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    precision: str
    input_shapes: InputShapes

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (shapes as lists); :meth:`from_dict` inverts it exactly."""
        return {
            "onnx_sha256": self.onnx_sha256,
            "gpu_name": self.gpu_name,
            "compute_capability": self.compute_capability,
            "tensorrt_version": self.tensorrt_version,
            "precision": self.precision,
            "input_shapes": [[name, list(shape)] for name, shape in self.input_shapes],
        }

    @staticmethod
    def from_dict(values: dict[str, Any]) -> EngineKey:
        """Parse :meth:`to_dict` output.

        Raises:
            ValueError: a field is missing or has the wrong type (the sidecar is then treated as corrupt).
        """
        try:
            strings = {name: values[name] for name in _FIELD_LABELS if name != "input_shapes"}
            if not all(isinstance(v, str) for v in strings.values()):
                raise ValueError("key fields must be strings")
            shapes = tuple((str(name), tuple(int(d) for d in shape)) for name, shape in values["input_shapes"])
            return EngineKey(input_shapes=shapes, **strings)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed engine key ({exc.__class__.__name__}: {exc})") from exc

    def digest(self) -> str:
        """Short hex digest of the canonical JSON form; stable across processes and Python versions."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:_DIGEST_CHARS]

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable reasons why an engine built for ``self`` does not fit ``other``."""
        reasons = []
        mine, theirs = self.to_dict(), other.to_dict()
        for field, label in _FIELD_LABELS.items():
            if mine[field] != theirs[field]:
                reasons.append(f"{label}: {_short(mine[field], field)} -> {_short(theirs[field], field)}")
        return reasons


def _short(value: Any, field: str) -> str:
    """Shorten hashes so a reason line stays readable."""
    if field == "onnx_sha256" and isinstance(value, str):
        return value[:12]
    if field == "input_shapes":
        return ", ".join(f"{name}{list(shape)}" for name, shape in value)
    return str(value)


class CacheState(enum.Enum):
    MISSING = "missing"
    VALID = "valid"
    STALE = "stale"
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class CacheStatus:
    """What :func:`check_cached` found, with the reason in words for the log."""

    state: CacheState
    reason: str = ""
    superseded: tuple[str, ...] = ()  # MISSING only: why engines cached for this model before do not fit


class CacheAction(enum.Enum):
    LOAD = "load"
    BUILD = "build"


def default_cache_dir() -> Path:
    """``$VKNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/vknet/engines``, else ``~/.cache/vknet/engines``.

    Engines are large and rebuildable, which is exactly what the XDG cache directory is for; the override
    lets containers put them on a persistent volume.
    """
    override = os.environ.get("VKNET_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vknet" / "engines"


def sanitize_name(text: str) -> str:
    """Reduce ``text`` to [A-Za-z0-9_-] so a GPU or model name is safe in a file name on every OS."""
    return _UNSAFE_NAME_CHARS.sub("_", text).strip("_") or "unknown"


def _sanitize_version(text: str) -> str:
    return _UNSAFE_VERSION_CHARS.sub("_", text).strip("_") or "unknown"


def sidecar_path_for(engine_path: str | Path) -> Path:
    """``x.engine`` -> ``x.engine.json``.

    Not ``x.json``: for ``model.engine`` beside ``model.onnx`` that name is already the model contract.
    """
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def engine_paths(cache_dir: str | Path, key: EngineKey, model_name: str = "model") -> tuple[Path, Path]:
    """Engine and sidecar paths for ``key`` in ``cache_dir``.

    The name carries a readable prefix (model, GPU, TensorRT version, precision) so a user can tell cached
    engines apart with ``ls``; the digest makes it unique per key.

    Returns:
        (engine_path, sidecar_path), e.g. ``model-NVIDIA_H100-trt10.12.0.36-fp16-<digest>.engine`` and the
        same name + ``.json``.
    """
    name = (f"{sanitize_name(model_name)}-{sanitize_name(key.gpu_name)}-trt{_sanitize_version(key.tensorrt_version)}"
            f"-{key.precision}-{key.digest()}.engine")
    engine_path = Path(cache_dir) / name
    return engine_path, sidecar_path_for(engine_path)


def timing_cache_path(cache_dir: str | Path, gpu_name: str, tensorrt_version: str) -> Path:
    """TensorRT timing cache shared by all builds on one GPU model and TensorRT version.

    The timing cache records kernel timings, not the model, so it is reused across models and makes rebuilds
    (a new ONNX export, the other precision) much faster; it is only valid for the GPU and TensorRT version.
    """
    return Path(cache_dir) / f"timing-{sanitize_name(gpu_name)}-trt{_sanitize_version(tensorrt_version)}.cache"


def _read_sidecar(sidecar_path: Path) -> tuple[EngineKey, int, str]:
    """(key, engine size, engine sha256) from a sidecar; ValueError (or OSError) when it is not one."""
    try:
        meta = json.loads(sidecar_path.read_text())
        if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"not a {SIDECAR_FORMAT} file")
        if meta.get("version") != SIDECAR_VERSION:
            raise ValueError(f"sidecar version {meta.get('version')!r}, this vknet writes {SIDECAR_VERSION}")
        return EngineKey.from_dict(meta["key"]), int(meta["engine_size"]), str(meta["engine_sha256"])
    except (UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{exc.__class__.__name__}: {exc}") from exc


def superseded_engines(cache_dir: str | Path, key: EngineKey, model_name: str) -> list[str]:
    """Why each engine cached earlier for ``model_name`` in ``cache_dir`` does not fit ``key``.

    Cache file names contain the key's digest, so after a GPU, TensorRT or model change the new key simply
    finds no file. This recovers the "GPU changed: A -> B" explanation from the old engines' sidecars, so the
    rebuild is explained instead of looking like a first run. Only files named exactly as
    :func:`engine_paths` would name them for ``model_name`` count.
    """
    cache_dir = Path(cache_dir)
    reasons = []
    for sidecar in sorted(cache_dir.glob(f"{sanitize_name(model_name)}-*.engine.json")):
        try:
            old_key = _read_sidecar(sidecar)[0]
        except (OSError, ValueError):
            continue
        if old_key == key or engine_paths(cache_dir, old_key, model_name)[1] != sidecar:
            continue
        reasons.append(f"{sidecar.name.removesuffix('.json')} ({'; '.join(old_key.differences(key))})")
    return reasons


def check_cached(engine_path: str | Path, sidecar_path: str | Path, key: EngineKey, *,
                 model_name: str | None = None) -> CacheStatus:
    """Decide whether the engine at ``engine_path`` was built for ``key`` and is intact.

    The key is compared before the file is hashed so that the more useful reason (what changed) is
    reported when both apply.

    Args:
        model_name: for an engine in the cache directory, the model name it was named with; a MISSING status
            then lists the engines of this model that were built for another setup (``superseded``).

    Returns:
        MISSING when there is no engine file; STALE when the sidecar's key differs (the reason names each
        changed field); CORRUPT when the sidecar is missing or unreadable or the engine is empty, truncated or
        altered; VALID otherwise.
    """
    engine_path, sidecar_path = Path(engine_path), Path(sidecar_path)
    if not engine_path.is_file():
        superseded = () if model_name is None else tuple(superseded_engines(engine_path.parent, key, model_name))
        return CacheStatus(CacheState.MISSING, f"no engine at {engine_path}", superseded)
    if not sidecar_path.is_file():
        return CacheStatus(CacheState.CORRUPT, f"{sidecar_path} is missing: the engine's provenance is unknown")
    try:
        cached_key, expected_size, expected_sha = _read_sidecar(sidecar_path)
    except (OSError, ValueError) as exc:
        return CacheStatus(CacheState.CORRUPT, f"unreadable sidecar {sidecar_path}: {exc}")
    differences = cached_key.differences(key)
    if differences:
        return CacheStatus(CacheState.STALE, "; ".join(differences))
    size = engine_path.stat().st_size
    if size == 0:
        return CacheStatus(CacheState.CORRUPT, f"{engine_path} is empty")
    if size != expected_size:
        return CacheStatus(CacheState.CORRUPT, f"{engine_path} has {size} bytes, the sidecar says {expected_size} "
                                               f"(truncated or partly written)")
    if file_sha256(engine_path) != expected_sha:
        return CacheStatus(CacheState.CORRUPT, f"{engine_path} does not match the sha256 in its sidecar")
    return CacheStatus(CacheState.VALID, f"cached engine {engine_path} matches")


def decide(status: CacheStatus, *, force: bool = False) -> CacheAction:
    """Load only a VALID cache (unless ``force``); log why anything else is rebuilt.

    Stale and corrupt caches, and a missing engine that replaces engines built for another GPU, TensorRT or
    model, are logged as warnings because they are the "it worked yesterday" case a user needs to see; a
    plain missing one is the normal first run.
    """
    if force:
        _LOG.info("rebuilding the TensorRT engine as requested (cache was %s)", status.state.value)
        return CacheAction.BUILD
    if status.state is CacheState.VALID:
        return CacheAction.LOAD
    if status.state is CacheState.MISSING and status.superseded:
        _LOG.warning("no TensorRT engine for this GPU/TensorRT/model yet; the cached ones were built for another "
                     "setup and will NOT be used: %s. Building a new one (old engines can be deleted).",
                     " | ".join(status.superseded))
    elif status.state is CacheState.MISSING:
        _LOG.info("no cached TensorRT engine (%s): building one", status.reason)
    else:
        _LOG.warning("cached TensorRT engine is %s and will NOT be used: %s. Rebuilding it.",
                     status.state.value.upper(), status.reason)
    return CacheAction.BUILD


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    A reader (or a crash) never sees a half-written engine under the final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def write_cache(engine_bytes: bytes, engine_path: str | Path, sidecar_path: str | Path, key: EngineKey) -> None:
    """Store an engine and its sidecar, each atomically, overwriting what was there.

    The engine is written first and the sidecar last: an interruption in between leaves a sidecar whose size
    and sha256 no longer match, which :func:`check_cached` reports as CORRUPT, so the pair is never trusted
    half-updated.
    """
    data = bytes(engine_bytes)
    if not data:
        raise ValueError("refusing to cache an empty engine")
    meta = {
        "format": SIDECAR_FORMAT,
        "version": SIDECAR_VERSION,
        "key": key.to_dict(),
        "digest": key.digest(),
        "engine_file": Path(engine_path).name,
        "engine_size": len(data),
        "engine_sha256": hashlib.sha256(data).hexdigest(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "vknet_version": __version__,
    }
    atomic_write(engine_path, data)
    atomic_write(sidecar_path, (json.dumps(meta, indent=2) + "\n").encode())


def ensure_cached(engine_path: str | Path, sidecar_path: str | Path, key: EngineKey, build: Callable[[], bytes], *,
                  force: bool = False, model_name: str | None = None) -> bool:
    """Make sure a valid engine for ``key`` is at ``engine_path``, calling ``build`` only when needed.

    Args:
        build: produces the serialized engine (minutes with TensorRT; a stub in tests).
        force: rebuild even if the cache is valid.
        model_name: see :func:`check_cached` (pass it for engines in the cache directory).

    Returns:
        True if an engine was built, False if the cached one was kept.
    """
    status = check_cached(engine_path, sidecar_path, key, model_name=model_name)
    if decide(status, force=force) is CacheAction.LOAD:
        _LOG.info("using cached TensorRT engine %s", engine_path)
        return False
    write_cache(build(), engine_path, sidecar_path, key)
    _LOG.info("wrote TensorRT engine %s (key %s)", engine_path, key.digest())
    return True
