"""Replay a KITTI bag (from `vknet bag` or kitti2bag) into vknet with simulated time, optionally RViz.

  ros2 launch vknet_ros kitti_replay.launch.py bag:=bags/synth_val rviz:=true
  ros2 launch vknet_ros kitti_replay.launch.py bag:=kitti_2011_09_26_drive_0005_synced.bag \
      image:=/kitti/camera_color_left/image_raw camera_info:=/kitti/camera_color_left/camera_info

The bag is played with /clock so that the node's latency and tracker resets follow bag time; sequences in
a `vknet bag` are 2 s apart, which resets the tracker between them. The player is `ros2 bag play` where
rosbag2 is installed and this package's `bag_player` otherwise (`player:=auto`); the vknet player starts
once the node subscribes to the image topic, so no frame is played to a node still loading its model.
For scores, use `vknet eval-bag --through-node`.
"""

import importlib.util

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PLAYERS = ("auto", "ros2bag", "vknet")


def player(context: LaunchContext) -> list:
    choice = LaunchConfiguration("player").perform(context)
    if choice not in PLAYERS:
        raise ValueError(f"player:={choice} is not one of {', '.join(PLAYERS)}")
    if choice == "auto":
        choice = "ros2bag" if importlib.util.find_spec("ros2bag") is not None else "vknet"
    bag, rate = LaunchConfiguration("bag").perform(context), LaunchConfiguration("rate").perform(context)
    if choice == "ros2bag":
        return [ExecuteProcess(cmd=["ros2", "bag", "play", bag, "--clock", "--rate", rate], output="screen")]
    image = LaunchConfiguration("image").perform(context)
    return [Node(package="vknet_ros", executable="bag_player", name="vknet_bag_player", output="screen",
                 arguments=[bag, "--clock", "--rate", rate, "--wait-for", image, "--no-progress"])]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vknet_ros")
    args = [
        DeclareLaunchArgument("bag", description="rosbag2 folder or ROS 1 .bag to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate factor"),
        DeclareLaunchArgument("player", default_value="auto", description="auto | ros2bag | vknet"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="image topic in the bag"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="camera_info topic"),
        DeclareLaunchArgument("depth", default_value="false",
                              description="3D tracks from the bag's depth topic (vknet synth --depth, vknet bag)"),
        DeclareLaunchArgument("depth_image", default_value="/camera/depth/image_raw", description="depth topic"),
        DeclareLaunchArgument("model", default_value="", description="model file; empty = the bundled model"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto | tensorrt | onnxruntime | torch"),
        DeclareLaunchArgument("namespace", default_value="vknet", description="namespace of the outputs"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz"),
    ]
    camera = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "camera.launch.py"])),
        launch_arguments={"image": LaunchConfiguration("image"), "camera_info": LaunchConfiguration("camera_info"),
                          "model": LaunchConfiguration("model"), "backend": LaunchConfiguration("backend"),
                          "namespace": LaunchConfiguration("namespace"), "use_sim_time": "true",
                          "rviz": LaunchConfiguration("rviz"), "depth": LaunchConfiguration("depth"),
                          "depth_image": LaunchConfiguration("depth_image")}.items(),
    )
    return LaunchDescription([*args, camera, OpaqueFunction(function=player)])
