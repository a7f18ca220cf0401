"""This package built and installed the way colcon does it, once per test session, for the tests that run it
as a ROS user would (`ros2 run`, `ros2 launch`)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Install:
    prefix: Path
    site: Path            # the prefix's site-packages (the Python sources and generated messages)
    env: dict[str, str]   # PATH, AMENT_PREFIX_PATH, PYTHONPATH and LD_LIBRARY_PATH of a sourced workspace


class BuildError(RuntimeError):
    pass


@functools.cache
def colcon_install() -> Install:
    """Configure this CMakeLists.txt with colcon's defaults from a copy of the sources and install it into a
    temporary prefix (removed at exit). Raises BuildError with the build's output tail on failure."""
    root = Path(tempfile.mkdtemp(prefix="vknet_colcon_"))
    atexit.register(shutil.rmtree, root, True)
    venv_bin = Path(sys.executable).parent
    prefix = root / "install"
    env = dict(os.environ, PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
               AMENT_PREFIX_PATH=f"{prefix}{os.pathsep}{sys.prefix}")
    # Copy the package as colcon sees it: a source folder outside any venv or build tree.
    source = root / "src" / "vknet_ros"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", "build", ".git", "__pycache__",
                                                                "*.egg-info", ".*_cache", "demo_out", "runs"))
    for step in (["cmake", "-S", str(source), "-B", str(root / "build"), f"-DCMAKE_INSTALL_PREFIX={prefix}",
                  f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF"],
                 ["cmake", "--build", str(root / "build"), "-j2"],
                 ["cmake", "--install", str(root / "build")]):
        result = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise BuildError(f"{' '.join(step[:2])} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    site = prefix / "lib" / purelib.parent.name / "site-packages"
    env.update(PYTHONPATH=str(site), LD_LIBRARY_PATH=os.pathsep.join(
        p for p in (str(prefix / "lib"), os.environ.get("LD_LIBRARY_PATH", "")) if p))
    return Install(prefix, site, env)
