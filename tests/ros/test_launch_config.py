"""Launch files, the params file and the RViz config name only things that exist (checked statically, without
launch_ros), plus launch's own reading of them where launch_ros is installed (`make ros-kit`)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import load_script
from vknet_ros.node_cli import node_arguments
from vknet_ros.node_settings import PARAMETERS, settings_from_values

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = sorted((ROOT / "launch").glob("*.launch.py"))
# share/vknet_ros/<dir> -> where CMakeLists.txt installs it from (install(DIRECTORY vknet_ros/config launch ...)).
SHARE_SOURCES = {"config": ROOT / "vknet_ros" / "config", "launch": ROOT / "launch"}
NODE_INPUTS = {"image", "camera_info", "image/compressed", "depth", "depth/camera_info"}
NODE_OUTPUTS = {"panoptic", "semantic", "overlay", "tracks", "markers", "class_map"}


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _calls(path: Path, name: str) -> list[ast.Call]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _installed_programs() -> set[str]:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    return {Path(p).name for group in re.findall(r"install\(PROGRAMS\s+(.*?)\s+DESTINATION", cmake)
            for p in group.split()}


def test_there_are_two_launch_files() -> None:
    assert {p.name for p in LAUNCH} == {"camera.launch.py", "kitti_replay.launch.py"}


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_nodes_executables_and_parameters_exist(path: Path) -> None:
    declared = {ast.literal_eval(c.args[0]) for c in _calls(path, "DeclareLaunchArgument")}
    used = {ast.literal_eval(c.args[0]) for c in _calls(path, "LaunchConfiguration")}
    assert used <= declared, f"undeclared launch arguments {used - declared}"
    for call in _calls(path, "Node"):
        package = ast.literal_eval(_keyword(call, "package"))  # type: ignore[arg-type]
        executable = ast.literal_eval(_keyword(call, "executable"))  # type: ignore[arg-type]
        if package != "vknet_ros":
            assert (package, executable) == ("rviz2", "rviz2")
            continue
        assert executable in _installed_programs() and (ROOT / "scripts" / executable).is_file()
        if executable != "vknet_node":
            continue
        params = _keyword(call, "parameters")
        assert isinstance(params, ast.List)
        for item in params.elts:
            if isinstance(item, ast.Dict):
                names = {ast.literal_eval(k) for k in item.keys if k is not None}
                assert names <= set(PARAMETERS) | {"use_sim_time"}, names - set(PARAMETERS)
        remaps = _keyword(call, "remappings")
        assert isinstance(remaps, ast.List)
        assert {ast.literal_eval(t.elts[0]) for t in remaps.elts} <= NODE_INPUTS  # type: ignore[attr-defined]
    for call in _calls(path, "PathJoinSubstitution"):
        parts = [ast.literal_eval(e) for e in call.args[0].elts[1:]]  # type: ignore[attr-defined]
        assert (SHARE_SOURCES[parts[0]] / Path(*parts[1:])).is_file(), parts
    for call in _calls(path, "IncludeLaunchDescription"):
        included = ROOT / "launch" / "camera.launch.py"
        names = {ast.literal_eval(c.args[0]) for c in _calls(included, "DeclareLaunchArgument")}
        passed = ast.unparse(call)
        assert set(re.findall(r"'(\w+)': ", passed)) <= names


def test_params_file_mirrors_the_node_parameters() -> None:
    data = yaml.safe_load((ROOT / "vknet_ros" / "config" / "vknet.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    assert list(params) == list(PARAMETERS)
    for name, value in params.items():
        assert value == PARAMETERS[name][0], name
    settings_from_values(params)


def test_rviz_config_shows_node_outputs() -> None:
    rviz = yaml.safe_load((ROOT / "vknet_ros" / "config" / "vknet.rviz").read_text())
    topics = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics == {"/vknet/overlay", "/vknet/panoptic", "/vknet/markers"}
    assert {t.rsplit("/", 1)[1] for t in topics} <= NODE_OUTPUTS


def test_node_cli_turns_shortcuts_into_parameters() -> None:
    args = argparse.Namespace(model="m.onnx", backend="onnxruntime", device=None,
                              ros_args=["--ros-args", "-r", "image:=/cam"])
    assert node_arguments(args) == ["--ros-args", "-p", "model:=m.onnx", "-p", "backend:=onnxruntime",
                                    "-r", "image:=/cam"]
    plain = argparse.Namespace(model=None, backend=None, device=None, ros_args=[])
    assert node_arguments(plain) == []


def test_the_documented_node_command_lines_parse(capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_cli import parse_args

    # README / `vknet node --help` form: --ros-args straight after the options (argparse had refused it).
    args = parse_args(["node", "--model", "m.onnx", "--ros-args", "-r", "image:=/cam", "-p", "device:=cpu"])
    assert node_arguments(args) == ["--ros-args", "-p", "model:=m.onnx", "-r", "image:=/cam", "-p", "device:=cpu"]
    assert node_arguments(parse_args(["node", "--", "--ros-args", "-r", "image:=/cam"])) == [
        "--ros-args", "-r", "image:=/cam"]
    with pytest.raises(SystemExit):
        parse_args(["synth", "--out", "x", "--ros-args", "-r", "a:=b"])
    assert "belongs to `vknet node`" in capsys.readouterr().err


@pytest.mark.skipif(not _importable("launch_ros"),
                    reason="launch_ros is not installed (no PyPI wheel; it comes with ../shared/ros2_cli_kit: "
                           "`make ros-kit`); the launch files are checked statically above")
@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_ros2_launch_describes_each_launch_file(path: Path) -> None:
    """launch itself loads each file and lists its arguments (tests/ros/test_camera_launch.py runs one)."""
    from launch import LaunchContext, LaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    description = PythonLaunchDescriptionSource(str(path)).get_launch_description(LaunchContext())
    assert isinstance(description, LaunchDescription)
    declared = {a.name for a in description.get_launch_arguments()}
    own = {ast.literal_eval(c.args[0]) for c in _calls(path, "DeclareLaunchArgument")}
    included = {ast.literal_eval(c.args[0]) for c in _calls(ROOT / "launch" / "camera.launch.py",
                                                            "DeclareLaunchArgument")}
    # Where vknet_ros is found (an install prefix on AMENT_PREFIX_PATH), launch lists the included file's too.
    assert own <= declared and declared - own <= included


@pytest.mark.skipif(not _importable("launch_ros"),
                    reason="launch_ros is not installed (it comes with ../shared/ros2_cli_kit: `make ros-kit`)")
def test_the_replay_player_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """player:=auto takes `ros2 bag play` only where rosbag2 is installed; a wrong choice is refused by name."""
    from launch import LaunchContext
    from launch.actions import ExecuteProcess
    from launch_ros.actions import Node

    module = load_script("launch/kitti_replay.launch.py")

    def chosen(player: str) -> object:
        context = LaunchContext()
        context.launch_configurations.update(player=player, bag="/bags/b", rate="0.5", image="/camera/image_raw")
        (action,) = module.player(context)
        return action

    real_find_spec = importlib.util.find_spec
    for ros2bag_installed in (False, True):
        monkeypatch.setattr(module.importlib.util, "find_spec", lambda name, installed=ros2bag_installed: (
            object() if installed else None) if name == "ros2bag" else real_find_spec(name))
        assert isinstance(chosen("auto"), ExecuteProcess if ros2bag_installed else Node)
    monkeypatch.undo()
    assert isinstance(chosen("vknet"), Node) and isinstance(chosen("ros2bag"), ExecuteProcess)
    with pytest.raises(ValueError, match="player:=bogus is not one of auto, ros2bag, vknet"):
        chosen("bogus")
