"""The package builds and installs the way colcon does it in a ROS 2 workspace.

`make setup` installs only the generated messages (the sources come from the repo, editable). A ROS 2
user runs `colcon build`, which configures this CMakeLists.txt with the defaults and installs sources,
messages and config into the workspace prefix. This builds exactly that into a temporary prefix and
imports everything from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ros.colcon_prefix import colcon_install

PROBE = """
import vknet_ros.dds_env, vknet_ros.msg
print(vknet_ros.msg.__file__)
print(vknet_ros.dds_env.__file__)
print(vknet_ros.dds_env.profile_path())
"""


@pytest.mark.slow
def test_workspace_install_holds_sources_messages_and_config(tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: run `make setup`")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    install = colcon_install()
    prefix, site = install.prefix, install.site
    for package in ("vknet_ros", "vknet_model", "vknet_data", "vknet_eval", "training"):
        assert (site / package / "__init__.py").is_file(), f"{package} not installed in {site}"
    assert (prefix / "share" / "vknet_ros" / "package.xml").is_file()
    assert (prefix / "share" / "vknet_ros" / "config" / "fastdds_loopback.xml").is_file()

    # Run with the workspace first on the path, from a folder that is not the repo (like `ros2 run`).
    run_env = install.env
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=run_env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    msg_file, dds_env_file, profile = (Path(line) for line in result.stdout.split())
    assert site in msg_file.parents
    assert site in dds_env_file.parents
    # The profile is package data beside the installed vknet_ros (the same file is in share/ for launch files).
    assert profile == site / "vknet_ros" / "config" / "fastdds_loopback.xml" and profile.is_file()
    assert (prefix / "share" / "vknet_ros" / "config" / "fastdds_loopback.xml").is_file()
    for name in ("launch/camera.launch.py", "launch/kitti_replay.launch.py", "config/vknet.yaml",
                 "config/vknet.rviz"):
        assert (prefix / "share" / "vknet_ros" / name).is_file(), name

    # `ros2 run vknet_ros vknet_node` executes lib/vknet_ros/vknet_node: run it the same way, with a model
    # that does not exist, and expect the node to come up and report the configure failure.
    executable = prefix / "lib" / "vknet_ros" / "vknet_node"
    assert os.access(executable, os.X_OK)
    from vknet_ros.dds_env import loopback_environment

    proc = subprocess.Popen([str(executable), "--ros-args", "-p", "model:=/nonexistent/model.onnx"], cwd=tmp_path,
                            env=dict(run_env, **loopback_environment()), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        output, _ = proc.communicate(timeout=10)
    assert "configure failed: model file not found: /nonexistent/model.onnx" in output, output[-2000:]
