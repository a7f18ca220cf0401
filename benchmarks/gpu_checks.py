"""Everything to measure when a GPU is lent, as one command that fits the device budget (15 minutes a task).

On the device machine, from the repository root (it has torch, numpy, OpenCV and ONNX, but no ROS):
    bash benchmarks/gpu_checks.sh   # installs the carried build/gpu_wheels (`make gpu-wheels` here), sets
                                    # PYTHONPATH to the checkout, runs this with --out $OUT

Steps, each written under --out as soon as it finishes, so a run cut short keeps what it had:
1. the CUDA tests (tests/model/test_torch_backend.py -m gpu): CUDA against CPU, CUDA graph replay against eager;
2. `vknet bench` with the torch backend, per config and variant (fp32 eager, fp16 eager, fp16 + CUDA graph):
   per-stage p50/p90, end-to-end frames per second, peak CUDA memory; r50 is timed at 384x1248 with random
   weights (seed 0), which cost what trained ones do;
3. the panoptic assembly alone at each config's shapes (CUDA events), which the bench counts inside the
   network, for the "tracker + assembly < 2 ms" goal (the tracker stage comes from step 2).
summary.json gathers the figures; the table printed at the end is what goes into benchmarks/RESULTS.md.
`--device cpu` runs the same steps on the CPU (no graph variant), which is how the suite tests this script.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vknet_model.config import resolve_config
from vknet_model.panoptic import assemble_panoptic
from vknet_ros import bench_cli

REPO = Path(__file__).resolve().parent.parent

# (name, precision, CUDA graph). The CPU has no fast fp16 convolutions and no graphs: bf16 is its variant.
CUDA_VARIANTS = (("fp32", "fp32", False), ("fp16", "fp16", False), ("fp16_graph", "fp16", True))
CPU_VARIANTS = (("fp32", "fp32", False), ("bf16", "bf16", False))
TEST_TIMEOUT_S = 240     # the CUDA tests take seconds; the device allows 600 s a call for everything
GOAL_FPS = 60.0          # r50 at 384x1248, network + assembly + tracker (issue 7)
GOAL_TRACKER_ASSEMBLY_MS = 2.0


def _save(out: Path, name: str, data: Any) -> None:
    (out / name).write_text(json.dumps(data, indent=2) + "\n")


def run_cuda_tests(out: Path) -> dict[str, Any]:
    """The suite's GPU tests, in a child process (their output goes to tests.log)."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return {"ran": False, "why": "pytest is not installed here (carry build/gpu_wheels)"}
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider",
           str(REPO / "tests" / "model" / "test_torch_backend.py")]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd += ["--timeout", str(TEST_TIMEOUT_S // 2)]  # one hung test must not eat the device's call
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, timeout=TEST_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        # The exception's output is bytes even under text=True (CPython keeps what it read before the kill).
        caught = [part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                  for part in (exc.stdout, exc.stderr)]
        (out / "tests.log").write_text("".join(caught))
        return {"ran": True, "returncode": None, "result": f"timed out after {TEST_TIMEOUT_S} s"}
    (out / "tests.log").write_text(proc.stdout + proc.stderr)
    counts = [line for line in proc.stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?)\b", line)]
    return {"ran": True, "returncode": proc.returncode, "result": counts[-1] if counts else "no result line",
            "seconds": time.perf_counter() - start}


def run_bench(config: str, variant: tuple[str, str, bool], device: str, frames: int, out: Path) -> dict[str, Any]:
    name, precision, graph = variant
    path = out / f"bench_{config}_{name}.json"
    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)  # the bench's own options and defaults, so the two cannot drift apart
    argv = ["--config", config, "--backends", "torch", "--device", device, "--precision", precision,
            "--frames", str(frames), "--json", str(path)]
    args = parser.parse_args(argv + (["--cuda-graph"] if graph else []))
    if bench_cli.run(args) != 0:
        return {"config": config, "variant": name, "error": "vknet bench failed (see the log above)"}
    data = json.loads(path.read_text())
    row = data["results"][0]
    stages = row["stages_ms"]
    graph_ms = stages["network"]["p50"] + stages["tracker"]["p50"] + stages["postprocess"]["p50"]
    return {"config": config, "variant": name, "describe": row["describe"],
            "network_ms_p50": stages["network"]["p50"], "network_ms_p90": stages["network"]["p90"],
            "tracker_ms_p50": stages["tracker"]["p50"], "postprocess_ms_p50": stages["postprocess"]["p50"],
            "end_to_end_ms_p50": row["end_to_end_ms_p50"], "end_to_end_fps": 1e3 / row["end_to_end_ms_p50"],
            "network_tracker_postprocess_fps": 1e3 / graph_ms,
            "peak_cuda_allocated_mb": data.get("peak_cuda_allocated_mb")}


def time_assembly(config: str, device: str, reps: int = 100) -> dict[str, Any]:
    """Median time of assemble_panoptic on random inputs of the config's shapes (float32, as in FrameNet)."""
    cfg = resolve_config(config)
    n, k = cfg.num_kernels, cfg.data.num_classes
    stride = cfg.model.mask_stride
    h, w = cfg.model.input_height // stride, cfg.model.input_width // stride
    gen = torch.Generator(device=device).manual_seed(0)
    cls = torch.rand(n, k, generator=gen, device=device)
    masks = torch.randn(n, h, w, generator=gen, device=device) * 4
    sem = torch.randn(k, h, w, generator=gen, device=device)
    p = cfg.postprocess

    def once() -> None:
        assemble_panoptic(cls, masks, sem, num_proposals=cfg.model.num_proposals,
                          num_thing_classes=cfg.data.num_things, instance_score_thr=p.instance_score_thr,
                          overlap_thr=p.overlap_thr, mask_thr=p.mask_thr, mask_stride=stride,
                          upsample=stride // cfg.model.merge_stride)

    times = []
    with torch.inference_mode():
        for _ in range(10):
            once()
        for _ in range(reps):
            if device.startswith("cuda"):
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                once()
                end.record()
                end.synchronize()
                times.append(begin.elapsed_time(end))
            else:
                start = time.perf_counter()
                once()
                times.append(1e3 * (time.perf_counter() - start))
    return {"config": config, "kernels": n, "mask_grid": [h, w], "assembly_ms_p50": statistics.median(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files and logs")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    parser.add_argument("--configs", nargs="+", default=["r50", "tiny"])
    parser.add_argument("--frames", type=int, default=100, help="timed frames per bench run (default 100)")
    parser.add_argument("--no-tests", action="store_true", help="skip step 1")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: no CUDA device here (use --device cpu for a dry run)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    cuda = args.device.startswith("cuda")
    summary: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{platform.node()} {platform.machine()}",
        "device": torch.cuda.get_device_name(args.device) if cuda else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "bench": [], "assembly": [],
    }
    print(f"gpu_checks on {summary['device']} (torch {summary['torch']}, CUDA {summary['cuda']})", flush=True)
    if not args.no_tests:
        summary["tests"] = run_cuda_tests(args.out)
        print(f"1. CUDA tests: {summary['tests']}", flush=True)
        _save(args.out, "summary.json", summary)
    for config in args.configs:
        for variant in CUDA_VARIANTS if cuda else CPU_VARIANTS:
            print(f"2. bench {config} {variant[0]} ...", flush=True)
            summary["bench"].append(run_bench(config, variant, args.device, args.frames, args.out))
            _save(args.out, "summary.json", summary)
        summary["assembly"].append(time_assembly(config, args.device))
        _save(args.out, "summary.json", summary)
    print(f"\n{'config':<6} {'variant':<11} {'network':>8} {'tracker':>8} {'post':>6} {'end to end':>11} {'fps':>6}"
          "   (ms p50)")
    for row in summary["bench"]:
        if "error" in row:
            print(f"{row['config']:<6} {row['variant']:<11} {row['error']}")
            continue
        print(f"{row['config']:<6} {row['variant']:<11} {row['network_ms_p50']:8.2f} {row['tracker_ms_p50']:8.2f} "
              f"{row['postprocess_ms_p50']:6.2f} {row['end_to_end_ms_p50']:11.2f} {row['end_to_end_fps']:6.1f}")
    for row in summary["assembly"]:
        print(f"assembly alone, {row['config']}: {row['assembly_ms_p50']:.3f} ms ({row['kernels']} kernels, "
              f"grid {row['mask_grid']} -> stride 4)")
    print(f"goals: r50 >= {GOAL_FPS:.0f} fps end to end, tracker + assembly < {GOAL_TRACKER_ASSEMBLY_MS} ms")
    print(f"wrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
