"""`vknet bench`: the table and the JSON fields the speed issue asks for (a smoke run, no timing asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vknet_model.cli import main


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
