"""Peak memory and time of the node's work on one camera frame of each size, every output built.

Each size runs in a fresh process: the bundled model is loaded and warmed up on a small frame, a message of
the size is built, the peak RSS is reset to the current one (the baseline), then the frame goes through what
the node does with it -
decode the rgb8 message as a view, the pipeline (letterbox, network, tracker, maps at full size), the
panoptic and semantic images serialised, the overlay drawn and serialised, tracks and markers - and the
peak RSS is read again. The frame is a synthetic street scaled to the size.

Usage: python benchmarks/frame_memory.py [--sizes 375x1242 1080x1920 4096x4096] [--json benchmarks/frame_memory.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from vknet_model.machine import describe_cpu

DEFAULT_SIZES = ("375x1242", "1080x1920", "4096x4096")


def _peak_rss_mb() -> float:
    """Peak resident set since the start or the last :func:`_reset_peak` (Linux VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> None:
    """Start the peak over from the current RSS (Linux >= 4.0), so that building the test frame, which needs
    temporaries a camera driver does not, is not counted as the node's work."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(height: int, width: int) -> dict[str, float]:
    """One frame of height x width through the node's work, in this process."""
    import cv2
    import numpy as np
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from vknet_data.synth import SynthConfig, render_sequence
    from vknet_model.backends import open_backend
    from vknet_model.bundled import BUNDLED_ONNX
    from vknet_model.pipeline import Pipeline
    from vknet_ros.conversions import bgr_to_serialized_image, decode_camera_image, labels_to_serialized_image
    from vknet_ros.messages import markers_msg, tracks_msg
    from vknet_ros.overlay import draw_overlay

    pipeline = Pipeline(open_backend(BUNDLED_ONNX, backend="onnxruntime"), panoptic_dtype=np.uint16)  # as the node
    street = render_sequence(0, 1000, SynthConfig(frames=1))[0][0]
    pipeline.step(street, stamp=0.0, frame_id="warm-up")  # sessions, buffers and the 1242x375 geometry
    frame = cv2.resize(street, (width, height), interpolation=cv2.INTER_LINEAR)
    msg = Image(header=Header(frame_id="camera"), height=height, width=width, encoding="rgb8", is_bigendian=0,
                step=width * 3, data=frame.tobytes())
    del frame
    _reset_peak()
    baseline = _peak_rss_mb()  # the model, the sessions and one message of this size
    start = time.perf_counter()
    pixels, order = decode_camera_image(msg)
    result = pipeline.step(pixels, stamp=1.0, frame_id="camera", channel_order=order)
    stepped = time.perf_counter()
    header = msg.header
    labels_to_serialized_image(result.panoptic, header, "16UC1")
    labels_to_serialized_image(result.semantic, header, "mono8")
    bgr_to_serialized_image(draw_overlay(pixels, result, channel_order=order), header)
    tracks_msg(result.objects, header)
    markers_msg(result.objects, header, (float(width), float(width), width / 2, height / 2))
    done = time.perf_counter()
    return {"height": height, "width": width, "message_mb": len(msg.data) / 2**20,
            "baseline_peak_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb(),
            "frame_peak_over_baseline_mb": _peak_rss_mb() - baseline,
            "pipeline_ms": 1e3 * (stepped - start), "outputs_ms": 1e3 * (done - stepped)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), help="HEIGHTxWIDTH frames")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/frame_memory.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this size in this process
    args = parser.parse_args(argv)
    if args.one:
        height, width = (int(v) for v in args.one.split("x"))
        print(json.dumps(measure(height, width)))
        return 0
    rows = []
    print(f"{'frame':>10} {'message MB':>10} {'peak RSS MB':>11} {'frame adds MB':>13} {'pipeline ms':>11} "
          f"{'outputs ms':>10}")
    for size in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--one", size], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{size}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{size:>10} {row['message_mb']:>10.1f} {row['peak_rss_mb']:>11.0f} "
              f"{row['frame_peak_over_baseline_mb']:>13.0f} {row['pipeline_ms']:>11.0f} {row['outputs_ms']:>10.0f}")
    result = {"machine": describe_cpu(),
              "date": time.strftime("%Y-%m-%d"), "model": "bundled tiny_synth (ONNX Runtime)", "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
