"""`vknet bench`: the table and the JSON fields the speed issue asks for (a smoke run, no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vknet_cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_bench_writes_per_stage_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", "tiny", "--backends", "torch", "--frames", "10", "--warmup", "1",
                 "--height", "120", "--width", "400", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    row = data["results"][0]
    for key in ("backend", "config", "device", "network_ms_p50", "end_to_end_ms_p50"):
        assert key in row
    assert (row["backend"], row["config"], row["device"], row["frames"]) == ("torch", "tiny", "cpu", 10)
    stages = row["stages_ms"]
    assert set(stages) == {"preprocess", "network", "tracker", "postprocess", "messages", "end_to_end"}
    assert all(0 < s["p50"] <= s["p90"] for s in stages.values())
    assert row["end_to_end_ms_p50"] >= row["network_ms_p50"] and data["peak_rss_mb"] > 0
    assert "end to end / network" in capsys.readouterr().out


def test_bench_refuses_too_few_frames(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--frames", "3"]) == 2
    assert "at least 10" in capsys.readouterr().err


def test_bench_refuses_a_model_it_cannot_time_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not a checkpoint")
    assert main(["bench", "--model", str(onnx), "--frames", "10"]) == 2
    assert "takes the checkpoint (.pt)" in capsys.readouterr().err
    assert main(["bench", "--model", str(tmp_path / "missing.pt"), "--frames", "10"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and "Traceback" not in err
    assert main(["bench", "--config", "r18", "--model", str(tmp_path / "missing.pt"), "--frames", "10"]) == 2
    assert "not both" in capsys.readouterr().err


def test_bench_runs_without_ros_and_with_torch_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU machine may have no ROS 2: the messages stage is then left out, the rest still timed."""
    from vknet_ros import bench_cli

    monkeypatch.setattr(bench_cli, "_message_builder", lambda: None)
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", "tiny", "--backends", "torch", "--precision", "bf16", "--frames", "10",
                 "--warmup", "1", "--height", "120", "--width", "400", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert set(row["stages_ms"]) == {"preprocess", "network", "tracker", "postprocess", "end_to_end"}
    assert "bf16" in row["describe"]
    assert "messages stage is not timed" in capsys.readouterr().out
    assert main(["bench", "--config", "tiny", "--backends", "torch", "--cuda-graph", "--frames", "10"]) == 2
    assert "cuda_graph needs a CUDA device" in capsys.readouterr().err


def test_schedule_alternates_blocks_and_leaves_each_switch_untimed() -> None:
    from vknet_ros.bench_cli import schedule

    order = schedule(["a", "b"], frames=3, warmup=1, block=2)
    assert order[:2] == [("a", 0, False), ("b", 0, False)]
    assert order[2:6] == [("a", 1, False), ("a", 2, True), ("b", 1, False), ("b", 2, True)]
    for name in "ab":
        mine = [(t, timed) for n, t, timed in order if n == name]
        assert [t for t, _ in mine] == list(range(len(mine)))  # every backend sees the frames in order
        assert sum(timed for _, timed in mine) == 3
    with pytest.raises(ValueError, match="block must be at least 2"):
        schedule(["a", "b"], frames=3, warmup=1, block=1)  # every frame would follow a switch: none timed
    # One backend never switches: everything after the warm-up is timed.
    assert schedule(["a"], frames=3, warmup=1, block=2) == [("a", 0, False), ("a", 1, True), ("a", 2, True),
                                                              ("a", 3, True)]


def test_gpu_checks_dry_run_on_the_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu_checks.py is what a lent GPU runs; here its steps run on the CPU (bf16 for fp16, no graph)."""
    from tests.conftest import load_script

    gpu_checks = load_script("benchmarks/gpu_checks.py")
    assert gpu_checks.main(["--device", "cpu", "--configs", "tiny", "--frames", "10", "--no-tests",
                            "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [(b["config"], b["variant"]) for b in summary["bench"]] == [("tiny", "fp32"), ("tiny", "bf16")]
    assert all(b["end_to_end_fps"] > 0 and b["network_ms_p50"] > 0 for b in summary["bench"])
    assert "bf16" in summary["bench"][1]["describe"]
    assert summary["assembly"][0]["assembly_ms_p50"] > 0 and summary["assembly"][0]["kernels"] == 37
    assert (tmp_path / "bench_tiny_bf16.json").is_file()
    if not __import__("torch").cuda.is_available():
        assert gpu_checks.main(["--out", str(tmp_path)]) == 2  # a CUDA run on a machine without CUDA: refused


def test_frame_memory_benchmark_measures_each_size_in_its_own_process(tmp_path: Path) -> None:
    out = tmp_path / "memory.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "frame_memory.py"), "--sizes", "120x400",
                           "--json", str(out)], capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["height"], row["width"]) == (120, 400)
    assert row["peak_rss_mb"] >= row["baseline_peak_rss_mb"] > 0 and row["pipeline_ms"] > 0


def test_node_fuzz_benchmark_accounts_for_every_message(tmp_path: Path) -> None:
    """A short run of benchmarks/node_fuzz.py (the benchmark sends >= 5000): every hostile message is settled
    under a fixed reason or processed, none hangs or is left uncounted, and a good frame is answered exactly
    afterwards."""
    out = tmp_path / "fuzz.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "node_fuzz.py"), "--messages", "300",
                           "--seed", "1", "--no-progress", "--json", str(out)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["messages"] == 300 and result["hangs"] == result["uncounted"] == result["unexpected"] == 0
    assert result["node_errors"] == 0 and result["reasons_fixed_set"] and result["reasons_sum_to_bad_input"]
    assert result["good_frame_correct"] and result["peak_rss_mb"] < 1536
    outcomes = result["outcomes"]
    assert len(outcomes) >= 15, sorted(outcomes)
    assert outcomes["png_16_bit"] == {"encoding": outcomes["png_16_bit"]["encoding"]}
    assert set(outcomes["camera_info_bad"]) == {"camera_info"}


def test_depth_fuzz_benchmark_accounts_for_every_frame(tmp_path: Path) -> None:
    """A short run of benchmarks/depth_fuzz.py: every frame with hostile depth is answered, its 3D outcome is
    one of the reasons its kind can produce, and a good frame afterwards is placed again."""
    from vknet_ros import depth_input

    if not depth_input.available():
        pytest.skip("message_filters is not installed (make ros-kit)")
    out = tmp_path / "depth_fuzz.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "depth_fuzz.py"), "--cases", "16", "--seed", "1",
                           "--no-progress", "--json", str(out)], capture_output=True, text=True, check=False,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["answered"] == 16 and result["hangs"] == result["node_errors"] == result["unexpected"] == 0
    assert result["good_frame_placed_after"] and len(result["outcomes"]) >= 6


def test_three_cameras_cost_little_more_memory_than_one(tmp_path: Path) -> None:
    """A short run of benchmarks/node_cameras.py: a node for 1 and for 3 cameras (the model loaded once) answers
    every frame at a total 1 Hz, and with 3 cameras holds < 1.3x the resident memory it holds with one."""
    out = tmp_path / "cameras.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "node_cameras.py"), "--cameras", "1", "3",
                           "--rates", "1", "--seconds", "3", "--json", str(out)], capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, three = json.loads(out.read_text())["results"]
    assert (one["cameras"], three["cameras"]) == (1, 3)
    assert one["rows"][0]["worst_drop_fraction"] == three["rows"][0]["worst_drop_fraction"] == 0.0
    assert one["rss_mb"] > 100 and three["rss_ratio_to_first"] < 1.3, (one["rss_mb"], three["rss_mb"])


def test_bench_times_int8_beside_fp32_onnxruntime(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", "tiny", "--backends", "onnxruntime", "onnxruntime-int8", "--frames", "10",
                 "--warmup", "1", "--height", "120", "--width", "400", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {row["backend"]: row for row in data["results"]}
    assert set(rows) == {"onnxruntime", "onnxruntime-int8"} and "int8" in rows["onnxruntime-int8"]["describe"]
    assert data["int8_speedup_over_fp32_onnxruntime"]["network_ms_p50"] > 0 and isinstance(data["cpu_flags"], list)
