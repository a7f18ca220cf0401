"""The generated messages are importable from the repo root and from anywhere else.

The sources of ``vknet_ros`` live in the repo while rosidl installs ``vknet_ros/msg`` into site-packages.
If set-up leaves either half shadowing the other (rosidl's empty ``__init__.py`` without extend_path, a
stale generated ``msg/`` copied into the source tree), one of these imports breaks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import vknet_ros, vknet_ros.dds_env
from vknet_ros import msg
from rclpy.serialization import deserialize_message, serialize_message
from vknet_ros.msg import TrackedObject, TrackedObjectArray
array = TrackedObjectArray(objects=[TrackedObject(track_id=7, class_name="car")])
back = deserialize_message(serialize_message(array), TrackedObjectArray)
assert back == array, back
print(msg.__file__)
print(vknet_ros.dds_env.__file__)
"""


@pytest.mark.parametrize("where", ["repo_root", "elsewhere"])
def test_messages_and_sources_both_import(where: str, tmp_path: Path) -> None:
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: run `make setup`")
    cwd = ROOT if where == "repo_root" else tmp_path
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    msg_file, source_file = (Path(line) for line in result.stdout.split())
    assert ROOT / "vknet_ros" not in msg_file.parents, f"messages come from the source tree: {msg_file}"
    assert source_file.parent == ROOT / "vknet_ros", f"sources come from a stale copy: {source_file}"


def test_source_tree_holds_no_generated_messages() -> None:
    assert not (ROOT / "vknet_ros" / "msg").exists(), "vknet_ros/msg in the source tree shadows the build"


def test_installed_package_init_extends_path() -> None:
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed: run `make setup`")
    import vknet_ros.msg

    installed_init = Path(vknet_ros.msg.__file__).parent.parent / "__init__.py"
    assert installed_init.read_text() == (ROOT / "vknet_ros" / "__init__.py").read_text(), \
        "the installed vknet_ros/__init__.py is not ours: re-run `make setup`"
