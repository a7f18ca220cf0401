"""Test-wide settings: every ROS 2 participant started by the suite stays on loopback.

This runs before any test module imports rclpy, so the variables are in place for rclpy.init() in this
process and are inherited by every child process the tests start. Each pytest run draws its own
ROS_DOMAIN_ID, whatever the calling shell had, so parallel runs never hear each other.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from vknet_ros.dds_env import loopback_environment

os.environ.update(loopback_environment())

REPO = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """A script of the repository that is no package module (benchmarks/, tools/, launch/), imported by path and
    registered under its file name (dataclasses look their module up there)."""
    path = REPO / relative
    name = path.name.removesuffix(".py").replace(".", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    """A launch_testing test points os.environ at its install prefix and DDS domain for the processes it
    launches (launch resolves packages through os.environ); the tests after it must not inherit that."""
    saved = dict(os.environ) if type(item).__name__ == "LaunchTestItem" else None
    yield
    if saved is not None:
        os.environ.clear()
        os.environ.update(saved)


def pid(semantic: int, instance: int = 0) -> int:
    """Panoptic id in the semantic * 1000 + instance encoding (metric tests)."""
    return semantic * 1000 + instance


def frame(rows: list[list[int]]) -> np.ndarray:
    """An int64 panoptic map from nested lists of panoptic ids (metric tests)."""
    return np.array(rows, dtype=np.int64)


def moving_square_frame(t: int, height: int, width: int) -> np.ndarray:
    """RGB uint8 [H, W, 3]: a bright square moving right over a gradient (frames differ but stay related)."""
    image = np.repeat(np.linspace(0, 200, width, dtype=np.float32)[None, :, None], height, axis=0)
    image = np.repeat(image, 3, axis=2)
    top, left = height // 5, width // 12 + 30 * t
    image[top: top + height // 3, left: left + width // 8] = 250
    return image.astype(np.uint8)


@pytest.fixture(scope="session")
def exported_tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A seeded random-weight tiny model exported once per run: (config, FrameNet, onnx path, contract)."""
    import torch

    from vknet_model.config import resolve_config
    from vknet_model.export import export_onnx
    from vknet_model.network import build_frame_net

    cfg = resolve_config("tiny")
    torch.manual_seed(0)
    frame_net = build_frame_net(cfg).eval()
    path: Path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    contract = export_onnx(frame_net, cfg, path)
    return cfg, frame_net, path, contract


def forged_jpeg_size(jpeg: bytes, height: int, width: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) rewritten to claim ``height`` x ``width``: a decompression bomb."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 9:]
