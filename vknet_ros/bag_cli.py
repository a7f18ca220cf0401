"""Write a rosbag2 (version 8: ROS 2 Humble and newer play it) from a KITTI-STEP or raw-KITTI folder.

Topics: /camera/image_raw (sensor_msgs/Image, rgb8 or bgr8), /camera/camera_info and, for labelled data,
/ground_truth/panoptic (sensor_msgs/Image 32SC1 = class * 1000 + instance), all with the same stamps.
KITTI-STEP frames are stamped at --rate from a fixed start; sequences follow each other with a 2 s gap, so
a replaying node resets its tracker between them. Raw-KITTI drives keep their real timestamps.

Examples:
  vknet synth --out data/synth --split val --sequences 2
  vknet bag --from-kitti-step data/synth --split val --out bags/synth_val
  vknet bag --from-raw-kitti 2011_09_26/2011_09_26_drive_0005_sync --out bags/drive5 --storage sqlite3
  ros2 bag play bags/synth_val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-kitti-step", type=Path, metavar="DIR", help="KITTI-STEP-layout root")
    source.add_argument("--from-raw-kitti", type=Path, metavar="DRIVE", help="raw-KITTI <date>_drive_<n>_sync folder")
    parser.add_argument("--split", default="val", help="KITTI-STEP split (default val)")
    parser.add_argument("--camera", default="image_02", help="raw-KITTI camera folder (default image_02, left colour)")
    parser.add_argument("--out", type=Path, required=True, help="bag folder to create (must not exist)")
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="storage plugin (default mcap)")
    parser.add_argument("--rate", type=float, default=10.0, help="KITTI-STEP frame rate in Hz (default 10)")
    parser.add_argument("--encoding", default="rgb8", choices=("rgb8", "bgr8"), help="image encoding (default rgb8)")
    parser.add_argument("--no-gt", action="store_true", help="leave the ground-truth topic out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from vknet_ros.bags import BagError, kitti_step_sources, raw_kitti_sources, write_bag

    try:
        if args.from_kitti_step is not None:
            sources = kitti_step_sources(args.from_kitti_step, args.split, rate_hz=args.rate,
                                         with_labels=not args.no_gt)
        else:
            sources = raw_kitti_sources(args.from_raw_kitti, args.camera)
        report = write_bag(args.out, sources, storage=args.storage, encoding=args.encoding,
                           progress=not args.no_progress)
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} ({args.storage}, rosbag2 version 8): {report.sequences} sequence(s), {report.frames} "
          f"frames, {report.messages} messages, {report.bytes / 1e6:.1f} MB in {report.seconds:.1f} s "
          f"({report.frames / max(report.seconds, 1e-9):.1f} frames/s)")
    return 0
