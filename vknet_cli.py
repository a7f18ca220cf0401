"""``vknet``: one command line for the whole product (training, export, evaluation, the ROS 2 node).

Each subcommand lives in its own module, which provides ``add_arguments(parser)`` and ``run(args) -> int``
and keeps heavy imports (torch, rclpy) inside ``run`` so that ``vknet --help`` stays fast and a machine
without ROS can still train and export.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from vknet_model.errors import VKNetError, one_line

# name -> (module, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("vknet_ros.demo",
             "synthetic street bag -> the live ROS 2 node (bundled model) -> STQ, latency, overlay video"),
    "synth": ("vknet_data.synth_cli", "generate synthetic KITTI-STEP sequences (images + panoptic labels)"),
    "train": ("training.train_cli", "train Video K-Net on KITTI-STEP-layout data (1 GPU, CPU, or torchrun DDP)"),
    "average": ("training.average_cli",
                "average the weights of several fine-tunes of one network (a model soup) into one checkpoint"),
    "predict": ("vknet_eval.predict_cli", "run the pipeline over a KITTI-STEP-layout folder, write panoptic PNGs"),
    "eval": ("vknet_eval.eval_cli", "score panoptic predictions: STQ / AQ / SQ and VPQ"),
    "bag": ("vknet_ros.bag_cli", "write a rosbag2 (camera, camera_info, ground truth) from KITTI-STEP or raw KITTI"),
    "play": ("vknet_ros.bag_player", "play a bag onto ROS 2 topics (with /clock), where `ros2 bag play` is missing"),
    "eval-bag": ("vknet_ros.eval_bag_cli",
                 "replay a bag offline or through the live node (--through-node) and score STQ / VPQ"),
    "export": ("vknet_model.export_cli", "export a checkpoint to ONNX (+ model.json contract) and check it"),
    "quantize": ("vknet_ros.quantize_cli",
                 "quantise an exported model to INT8 (QDQ, calibrated on synthetic streets, a dataset or a bag)"),
    "engine": ("vknet_model.engine_cli",
               "build the TensorRT engine for an exported model ahead of time (cached per GPU/TensorRT version)"),
    "node": ("vknet_ros.node_cli", "run the ROS 2 node (same as `ros2 run vknet_ros vknet_node`)"),
    "bench": ("vknet_ros.bench_cli", "per-stage latency of every backend on the same frames (table + JSON)"),
    "view3d": ("vknet_ros.view3d",
               "a picture of the 3D output: overlay beside the node's 3D markers from above (synthetic depth)"),
    "doctor": ("vknet_ros.doctor",
               "check the installation and measure a ROS 2 image round trip over loopback DDS"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vknet",
        description="Video K-Net: online video panoptic segmentation and tracking, with a ROS 2 node.",
        epilog="Run `vknet COMMAND --help` for the options of one command.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=summary, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The parsed command line. Everything from ``--ros-args`` on belongs to ROS (``vknet node``'s documented
    form): argparse would read it as an unknown option, so it is split off first and handed over whole."""
    parser = build_parser()
    ros: list[str] = []
    if "--ros-args" in argv:
        at = argv.index("--ros-args")
        argv, ros = argv[:at], argv[at:]
    args = parser.parse_args(argv)
    if ros:
        if not hasattr(args, "ros_args"):
            parser.error(f"--ros-args belongs to `vknet node`, not `vknet {args.command}`")
        args.ros_args = [*ros, *(a for a in args.ros_args if a != "--")]  # `vknet node -- --ros-args ...` too
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (VKNetError, OSError) as exc:
        # A bad file, setting or input: one line for the user; the traceback is for -v.
        if args.verbose:
            traceback.print_exc()
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
