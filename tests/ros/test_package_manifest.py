"""package.xml must parse and declare what the code imports.

An invalid package.xml makes colcon silently treat the package as plain Python and skip message
generation, so parsing it with catkin_pkg is the first line of defence.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

catkin_package = pytest.importorskip("catkin_pkg.package", reason="catkin_pkg is not installed")

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("vknet_ros", "vknet_model", "vknet_data", "vknet_eval", "training")

# Import name -> the rosdep key that provides it. Every third-party import of the product code must be
# listed here (the test fails on an unknown one) and the key must be a dependency in package.xml.
ROSDEP_KEYS = {
    "rclpy": "rclpy",
    "std_msgs": "std_msgs",
    "geometry_msgs": "geometry_msgs",
    "sensor_msgs": "sensor_msgs",
    "visualization_msgs": "visualization_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "vision_msgs": "vision_msgs",
    "message_filters": "message_filters",
    "rosgraph_msgs": "rosgraph_msgs",
    "builtin_interfaces": "std_msgs",
    "ament_index_python": "ament_index_python",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "numpy": "python3-numpy",
    "scipy": "python3-scipy",
    "cv2": "python3-opencv",
    "PIL": "python3-pil",
    "simplejpeg": "python3-simplejpeg-pip",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "torch": "python3-pytorch-pip",
    "onnx": "python3-onnx-pip",
    "onnxruntime": "python3-onnxruntime-pip",
    "rosbags": "python3-rosbags-pip",
    "rcl_interfaces": "rcl_interfaces",
    "mcap": "python3-mcap-pip",
}
# Imported only inside a guarded try/except with a fallback, never required.
OPTIONAL = {"tensorrt", "cv_bridge", "onnxscript"}


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _third_party_imports() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in _top_level_imports(path):
                if name in sys.stdlib_module_names or name in PACKAGES or name == "__future__":
                    continue
                found.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return found


def test_package_xml_parses_as_format_3_ament_cmake() -> None:
    package = catkin_package.parse_package(ROOT / "package.xml")
    package.validate()
    assert package.name == "vknet_ros"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [group.name for group in package.member_of_groups]
    buildtool = {dep.name for dep in package.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= buildtool
    assert "rosidl_default_runtime" in {dep.name for dep in package.exec_depends}


def test_package_xml_declares_every_import() -> None:
    package = catkin_package.parse_package(ROOT / "package.xml")
    declared = {dep.name for dep in package.exec_depends + package.build_depends}
    imports = _third_party_imports()
    unknown = {name: files for name, files in imports.items()
               if name not in ROSDEP_KEYS and name not in OPTIONAL}
    assert not unknown, f"imports with no rosdep key in this test's table: {unknown}"
    missing = {name: ROSDEP_KEYS[name] for name in imports
               if name in ROSDEP_KEYS and ROSDEP_KEYS[name] not in declared}
    assert not missing, f"imported but not declared in package.xml: {missing}"


def test_message_files_match_cmake_list() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for msg in sorted((ROOT / "msg").glob("*.msg")):
        assert f'"msg/{msg.name}"' in cmake, f"{msg.name} is not in rosidl_generate_interfaces"
