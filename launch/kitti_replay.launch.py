"""Replay a KITTI bag (from `vknet bag` or kitti2bag) into vknet with simulated time, optionally RViz.

  ros2 launch vknet_ros kitti_replay.launch.py bag:=bags/synth_val rviz:=true
  ros2 launch vknet_ros kitti_replay.launch.py bag:=kitti_2011_09_26_drive_0005_synced.bag \
      image:=/kitti/camera_color_left/image_raw camera_info:=/kitti/camera_color_left/camera_info

The bag is played with --clock so that the node's latency and tracker resets follow bag time; sequences in
a `vknet bag` are 2 s apart, which resets the tracker between them. For scores, use
`vknet eval-bag --through-node`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vknet_ros")
    args = [
        DeclareLaunchArgument("bag", description="rosbag2 folder or ROS 1 .bag to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate factor"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="image topic in the bag"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="camera_info topic"),
        DeclareLaunchArgument("model", default_value="", description="model file; empty = the bundled model"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto | tensorrt | onnxruntime | torch"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz"),
    ]
    camera = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "camera.launch.py"])),
        launch_arguments={"image": LaunchConfiguration("image"), "camera_info": LaunchConfiguration("camera_info"),
                          "model": LaunchConfiguration("model"), "backend": LaunchConfiguration("backend"),
                          "use_sim_time": "true", "rviz": LaunchConfiguration("rviz")}.items(),
    )
    play = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    return LaunchDescription([*args, camera, play])
