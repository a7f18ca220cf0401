"""vknet on a live camera: the node, optionally RViz.

  ros2 launch vknet_ros camera.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
  ros2 launch vknet_ros camera.launch.py backend:=tensorrt model:=/path/model.onnx rviz:=true
  ros2 launch vknet_ros camera.launch.py depth:=true depth_image:=/camera/aligned_depth_to_color/image_raw
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("vknet_ros")
    args = [
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="input image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="camera_info topic"),
        DeclareLaunchArgument("depth", default_value="false",
                              description="3D positions of the tracks from a registered depth image"),
        DeclareLaunchArgument("depth_image", default_value="/camera/depth/image_raw",
                              description="depth topic (16UC1 mm or 32FC1 m, registered to the image)"),
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, "config", "vknet.yaml"]),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("model", default_value="", description="model file; empty = the bundled model"),
        DeclareLaunchArgument("backend", default_value="auto", description="auto | tensorrt | onnxruntime | torch"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="vknet", description="namespace of the outputs"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/vknet.rviz"),
    ]
    use_sim_time = LaunchConfiguration("use_sim_time")
    node = Node(
        package="vknet_ros", executable="vknet_node", name="vknet", namespace=LaunchConfiguration("namespace"),
        output="screen", emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), {
            "model": LaunchConfiguration("model"), "backend": LaunchConfiguration("backend"),
            "depth": LaunchConfiguration("depth"),
            "use_sim_time": use_sim_time}],
        remappings=[("image", LaunchConfiguration("image")), ("camera_info", LaunchConfiguration("camera_info")),
                    ("depth", LaunchConfiguration("depth_image"))],
    )
    rviz = Node(
        package="rviz2", executable="rviz2", name="rviz2", output="screen",
        arguments=["-d", PathJoinSubstitution([share, "config", "vknet.rviz"])],
        parameters=[{"use_sim_time": use_sim_time}], condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*args, node, rviz])
