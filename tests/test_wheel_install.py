"""`pip install .` (a wheel, not editable) into a fresh venv outside the repo: every command finds what it
reads at run time (model configs, the bundled model, node config) as package data.

The venv gets this project's wheel only; its third-party dependencies (torch, ONNX Runtime, ...) come from
the development venv through a path entry, so nothing is downloaded and nothing of the source tree is on
the path (the development venv's editable-install hook is not processed from a path entry).
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(command: list[str], cwd: Path, timeout: int = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_commands(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
          str(ROOT)], cwd=tmp_path)
    (wheel,) = wheels.glob("vknet-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
         cwd=tmp_path)
    vknet = str(venv / "bin" / "vknet")
    work = tmp_path / "work"
    work.mkdir()
    where = _run([str(python), "-c", "import vknet_model, vknet_data; print(vknet_model.__file__)"], cwd=work)
    assert str(site) in where and str(ROOT) not in where, where
    assert "COMMAND" in _run([vknet, "--help"], cwd=work)
    _run([vknet, "synth", "--out", "data", "--split", "val", "--sequences", "1", "--frames", "2", "--height", "96",
          "--width", "320"], cwd=work)
    _run([vknet, "predict", "--data", "data", "--split", "val", "--out", "pred"], cwd=work)  # the bundled model
    assert len(list((work / "pred").rglob("*.png"))) == 2
    bundled = site / "vknet_model" / "assets" / "tiny_synth.pt"
    _run([vknet, "export", "--checkpoint", str(bundled), "--out", "m.onnx"], cwd=work)
    assert (work / "m.onnx").is_file() and (work / "m.json").is_file()
    _run([vknet, "train", "--config", "tiny", "--synthetic", "--out", "run", "--iters", "1", "--val-split", "",
          "--no-progress"], cwd=work)
    assert (work / "run" / "model.pt").is_file()
    assert (site / "vknet_ros" / "config" / "vknet.yaml").is_file()
