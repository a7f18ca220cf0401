"""A long run of the live node: does its memory, thread count or open descriptors grow with frames?

The node runs in its own process (DDS on loopback) with every output subscribed, as with RViz watching, and
is fed frames lockstep (each frame waits for the previous answer) from a synthetic bag played in a loop, with
time running on across loops (the tracker resets at each sequence's new frame_id). Every ``--every`` answered
frames the node's resident set (VmRSS), threads and open file descriptors are read from /proc. Growth is
measured from the first sample after ``--warmup`` frames (sessions, buffers and allocator pools are built by
then) to the last, and as a least-squares slope over the second half of the run, where a leak would show.

Usage: python benchmarks/node_soak.py [--frames 3000] [--every 100] [--json benchmarks/node_soak.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vknet_data.synth import SynthConfig, write_sequences
from vknet_model.bundled import resolve_model
from vknet_model.machine import describe_cpu
from vknet_ros.bags import BagFrame, BagReader, kitti_step_sources, write_bag
from vknet_ros.dds_env import apply_loopback_environment
from vknet_ros.replay import replay_through_node


class LoopedFrames:
    """The frames of a bag again and again until ``total``, stamps running on (0.1 s apart) across loops."""

    def __init__(self, reader: BagReader, total: int) -> None:
        self.frames_once = list(reader.frames())
        self.total = total

    def frame_count(self) -> int:
        return self.total

    def frames(self) -> Iterator[BagFrame]:
        for k in range(self.total):
            frame = self.frames_once[k % len(self.frames_once)]
            yield dataclasses.replace(frame, stamp_ns=10**9 + k * 10**8,
                                      sequence=f"{frame.sequence}_loop{k // len(self.frames_once)}")


def process_sample(pid: int) -> dict[str, float]:
    """The node's resident set (MB), threads and open file descriptors, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def summarise(samples: list[dict[str, float]], warmup: int) -> dict[str, Any]:
    settled = [s for s in samples if s["frame"] >= warmup]
    if len(settled) < 2:
        raise SystemExit(f"node_soak: only {len(settled)} samples after the warm-up; run more frames")
    first, last = settled[0], settled[-1]
    half = settled[len(settled) // 2:]
    slope = np.polyfit([s["frame"] for s in half], [s["rss_mb"] for s in half], 1)[0] if len(half) > 1 else 0.0
    return {
        "rss_mb_after_warmup": round(first["rss_mb"], 1), "rss_mb_end": round(last["rss_mb"], 1),
        "rss_mb_max": round(max(s["rss_mb"] for s in settled), 1),
        "rss_growth_percent": round(100 * (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"], 2),
        "rss_slope_mb_per_1000_frames_second_half": round(1000 * float(slope), 2),
        "threads_min_max": [int(min(s["threads"] for s in settled)), int(max(s["threads"] for s in settled))],
        "fds_min_max": [int(min(s["fds"] for s in settled)), int(max(s["fds"] for s in settled))],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--every", type=int, default=100, help="sample the node every N answered frames")
    parser.add_argument("--warmup", type=int, default=100, help="growth is measured from the first sample here")
    parser.add_argument("--model", type=Path, help="default: the bundled model (ONNX)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/node_soak.json"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    apply_loopback_environment()
    pid: list[int] = []
    samples: list[dict[str, float]] = []
    answered = [0]

    def on_answer(frame: BagFrame, panoptic: np.ndarray | None) -> None:
        answered[0] += 1
        if answered[0] % args.every == 0:
            samples.append({"frame": answered[0], **process_sample(pid[0])})

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sequences(root / "data", sequences=3, seed=0, split="soak", first_sequence=3000,
                        cfg=SynthConfig(frames=30), progress=False)
        write_bag(root / "bag", kitti_step_sources(root / "data", "soak"), progress=False)
        report = replay_through_node(LoopedFrames(BagReader(root / "bag"), args.frames),
                                     model=resolve_model(args.model, prefer_onnx=True), work_dir=root / "work",
                                     on_answer=on_answer, progress=not args.no_progress, every_output=True,
                                     on_node_started=pid.append)
    result = {
        "frames": report.sent, "answered": report.answered, "dropped": report.dropped,
        "node_errors": int(report.node_diagnostics.get("errors", -1)), "wall_s": round(report.wall_s, 1),
        **summarise(samples, args.warmup), "samples": samples,
        "cpu": describe_cpu(), "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", *sys.argv]),
    }
    print(f"\n| frames | answered | node errors | RSS after warm-up -> end (MB) | growth | slope, 2nd half "
          f"(MB/1000 frames) | threads | fds |\n|---|---|---|---|---|---|---|---|\n"
          f"| {result['frames']} | {result['answered']} | {result['node_errors']} | "
          f"{result['rss_mb_after_warmup']} -> {result['rss_mb_end']} | {result['rss_growth_percent']} % | "
          f"{result['rss_slope_mb_per_1000_frames_second_half']} | {result['threads_min_max']} | "
          f"{result['fds_min_max']} |\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["answered"] == result["frames"] and result["node_errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
