"""Run the vknet ROS 2 node (the same node as `ros2 run vknet_ros vknet_node`) from this venv.

Options below are shortcuts for node parameters; anything after --ros-args goes to ROS unchanged
(remappings, -p name:=value, --params-file vknet_ros/config/vknet.yaml, -r __ns:=/front). The node subscribes to
`image` and `camera_info` (with depth:=true also `depth`) and publishes panoptic, semantic, overlay, tracks,
markers and class_map.
Without --model it runs the bundled model.

Examples:
  vknet node --ros-args -r image:=/camera/image_raw -r camera_info:=/camera/camera_info
  vknet node --model run/model.onnx --backend onnxruntime --ros-args --params-file vknet_ros/config/vknet.yaml
  vknet node --loopback   # keep DDS on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST + profile)
  vknet node --ros-args -p depth:=true -r depth:=/camera/aligned_depth_to_color/image_raw   # 3D tracks
  vknet node --ros-args -p "cameras:=[front, left]" -r front/image:=/cam_front/image_raw \
      -r left/image:=/cam_left/image_raw   # one model, two cameras: front/panoptic, left/panoptic, ...
"""

from __future__ import annotations

import argparse
import sys

from vknet_model.backends import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file (.onnx or .pt); default: the bundled model")
    parser.add_argument("--backend", choices=BACKENDS, help="inference backend")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--loopback", action="store_true",
                        help="loopback-only DDS with the shipped large-image Fast DDS profile")
    parser.add_argument("ros_args", nargs=argparse.REMAINDER, help="--ros-args ... passed to ROS unchanged")


def node_arguments(args: argparse.Namespace) -> list[str]:
    """The ROS argument list for the node: the shortcuts as -p parameters, then the user's --ros-args."""
    ros = list(args.ros_args)
    if ros and ros[0] == "--":
        ros = ros[1:]
    params = [f"{name}:={value}" for name, value in (("model", args.model), ("backend", args.backend),
                                                      ("device", args.device)) if value is not None]
    if params:
        extra = ["--ros-args"] + [item for p in params for item in ("-p", p)]
        ros = extra + [a for a in ros if a != "--ros-args"] if "--ros-args" in ros else extra + ros
    return ros


def run(args: argparse.Namespace) -> int:
    if args.loopback:
        from vknet_ros.dds_env import apply_loopback_environment

        env = apply_loopback_environment()
        print(f"loopback DDS: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}", file=sys.stderr)
    from vknet_ros.node import main

    return main(["vknet_node", *node_arguments(args)])
