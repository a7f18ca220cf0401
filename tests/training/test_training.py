"""Training end to end on tiny synthetic data: schedule, checkpoints, resume, validation, and DDP on gloo."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.trainer import RunOptions, lr_factor, scenes_trained_on, train, weights_checksum
from vknet_model.checkpoint import load_checkpoint, read_checkpoint
from vknet_model.config import config_from_dict, load_config
from vknet_model.network import build_model


def test_learning_rate_warms_up_then_steps_down() -> None:
    cfg = config_from_dict({"train": {"warmup_iters": 4, "lr_steps": [6, 8]}})
    assert [lr_factor(s, cfg) for s in (0, 1, 3, 5, 6, 7, 8)] == pytest.approx([0.25, 0.5, 1.0, 1.0, 0.1, 0.1, 0.01])


def test_train_resume_and_validate(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, config_path = tiny_data
    cfg = load_config(config_path)
    out = tmp_path / "run"
    opts = RunOptions(data=data, out=out, iters=2, progress=False)
    train(cfg, opts)
    assert read_checkpoint(out / "last.pt")["step"] == 2
    final = train(cfg, RunOptions(data=data, out=out, iters=4, progress=False))  # resumes at 2
    with (out / "metrics.csv").open() as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == [1, 2, 3, 4]
    with (out / "val.csv").open() as handle:
        validations = list(csv.DictReader(handle))
    assert [int(v["step"]) for v in validations] == [2, 4]  # each run validates when it ends
    assert all(0.0 <= float(v["STQ"]) <= 1.0 for v in validations)
    loaded_cfg, net, payload = load_checkpoint(final)
    assert loaded_cfg.hash() == cfg.hash() and payload["step"] == 4
    resumed = read_checkpoint(out / "last.pt")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), resumed["state_dict"].values(),
                                                  strict=True))


def test_resume_refuses_another_network_but_accepts_a_new_schedule(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    data, config_path = tiny_data
    cfg = load_config(config_path)
    out = tmp_path / "run"
    train(cfg, RunOptions(data=data, out=out, iters=2, val_split=None, progress=False))
    wider = config_from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"], "channels": 64}})
    with pytest.raises(RuntimeError, match="different model config"):
        train(wider, RunOptions(data=data, out=out, iters=3, val_split=None, progress=False))
    longer = config_from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "lr_steps": [5]}})
    train(longer, RunOptions(data=data, out=out, iters=3, val_split=None, progress=False))
    assert "resuming" in caplog.text and "changed config (train)" in caplog.text
    assert read_checkpoint(out / "last.pt")["step"] == 3


def test_synthetic_stream_training_reports_the_train_held_out_gap(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    _, config_path = tiny_data
    cfg = load_config(config_path)
    out = tmp_path / "synthetic"
    caplog.set_level("INFO")
    train(cfg, RunOptions(data=None, out=out, synthetic=True, iters=2, val_sequences=1, progress=False))
    assert "fresh synthetic scenes (seed 1000, from scene 0)" in caplog.text
    # Validation scenes were generated: held-out ones of another seed, and the stream's first training scene.
    assert sorted(p.name for p in (out / "validation" / "images" / "val").iterdir()) == ["1000"]
    assert sorted(p.name for p in (out / "validation" / "images" / "train").iterdir()) == ["0000"]
    with (out / "val.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert {"STQ", "AQ", "SQ", "train_STQ", "train_AQ", "train_SQ", "gap_STQ"} <= set(row)
    assert float(row["gap_STQ"]) == pytest.approx(float(row["train_STQ"]) - float(row["STQ"]), abs=1e-5)
    assert "training scenes STQ" in caplog.text and "gap" in caplog.text
    # A resumed run starts past every scene the first part can have used.
    caplog.clear()
    train(cfg, RunOptions(data=None, out=out, synthetic=True, iters=3, val_split=None, progress=False))
    assert "from scene 10002" in caplog.text
    assert read_checkpoint(out / "model.pt")["scenes_after"] == 10003
    # A fine-tune from those weights starts past their scenes, and its own resume keeps that base.
    caplog.clear()
    tuned = tmp_path / "tuned"
    train(cfg, RunOptions(data=None, out=tuned, synthetic=True, iters=2, val_split=None, progress=False,
                          init=out / "model.pt"))
    assert "from scene 10003" in caplog.text
    caplog.clear()
    train(cfg, RunOptions(data=None, out=tuned, synthetic=True, iters=3, val_split=None, progress=False,
                          init=out / "model.pt"))
    assert "from scene 20005" in caplog.text


def test_a_time_limit_stops_resumably_and_the_same_command_finishes(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    root, config_path = tiny_data
    values = load_config(config_path).to_dict()
    values["train"]["log_every"] = 2  # rows reach metrics.csv two at a time
    cfg = config_from_dict(values)
    out = tmp_path / "limited"
    caplog.set_level("INFO")
    opts = RunOptions(data=root, out=out, val_split=None, progress=False, time_limit_s=0.0, workers=0)
    assert train(cfg, opts) == out / "last.pt"  # 0 s: stops after its first iteration
    assert read_checkpoint(out / "last.pt")["step"] == 1 and not (out / "model.pt").exists()
    assert "time limit of 0 s reached at iteration 1/4" in caplog.text
    paused_s = read_checkpoint(out / "last.pt")["train_seconds"]
    assert paused_s > 0
    assert train(cfg, RunOptions(data=root, out=out, val_split=None, progress=False)) == out / "model.pt"
    final = read_checkpoint(out / "model.pt")
    assert "resumed from" in caplog.text and final["step"] == 4
    # The run's training time spans its sittings: the first sitting's seconds are carried, not restarted.
    assert final["train_seconds"] > paused_s
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4]
    times = [float(row["time_s"]) for row in rows]
    assert all(t > paused_s for t in times[1:])  # rows of the second sitting count on from the first's time
    # Each row has its own time (the rows of one write had shared the time of that write).
    assert times[2] < times[3]  # the resumed part: steps 3 and 4, written together


def test_train_refuses_a_time_limit_or_worker_count_that_cannot_be(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_cli import main

    base = ["train", "--config", "tiny", "--synthetic", "--out", str(tmp_path / "run")]
    assert main([*base, "--time-limit", "0"]) == 2 and "must be positive" in capsys.readouterr().err
    assert main([*base, "--workers", "-1"]) == 2 and "--workers" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_init_from_another_network_is_one_clear_line(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from vknet_cli import main

    root, config_path = tiny_data
    small = tmp_path / "small"
    train(load_config(config_path), RunOptions(data=root, out=small, val_split=None, progress=False, iters=1))
    code = main(["train", "--config", "tiny", "--data", str(root), "--out", str(tmp_path / "tiny"),
                 "--init", str(small / "model.pt"), "--iters", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "holds another network" in err and "channels 32 -> " in err
    assert len(err.strip().splitlines()) == 1  # it was 276 lines of size mismatches


def test_an_unreadable_image_in_a_data_worker_is_one_line(tiny_data: tuple[Path, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from vknet_cli import main

    root, config_path = tiny_data
    data = tmp_path / "data"
    shutil.copytree(root, data)
    for image in (data / "images" / "train").rglob("*.png"):
        image.write_bytes(b"not a png")
    code = main(["train", "--config", str(config_path), "--data", str(data), "--val-split", "", "--workers", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot read image"), err  # it was 18 lines
    assert main(["train", "--config", str(config_path), "--data", str(tmp_path / "missing"),
                 "--out", str(tmp_path / "run2"), "--no-progress"]) == 2
    assert not (tmp_path / "run2").exists()  # no empty run folder for a wrong --data


def test_weights_written_before_scenes_were_recorded_are_bounded_from_their_step() -> None:
    assert scenes_trained_on({"step": 24750, "config": {"train": {"batch_size": 2}}}) == 59_500
    assert scenes_trained_on({"step": 0}) == 0
    assert scenes_trained_on({"step": 10, "scenes_after": 7}) == 7


def test_inference_only_settings_may_change_on_resume(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, config_path = tiny_data
    cfg = load_config(config_path)
    out = tmp_path / "run"
    train(cfg, RunOptions(data=data, out=out, iters=2, val_split=None, progress=False))
    model = {**cfg.to_dict()["model"], "merge_stride": 4, "input_height": 128, "input_width": 320}
    train(config_from_dict({**cfg.to_dict(), "model": model}),
          RunOptions(data=data, out=out, iters=3, val_split=None, progress=False))
    assert read_checkpoint(out / "last.pt")["step"] == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ddp_two_gloo_processes_keep_identical_replicas(tiny_data: tuple[Path, Path], tmp_path: Path) -> None:
    data, config_path = tiny_data
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), "-m", "vknet_cli", "train", "--config", str(config_path),
               "--data", str(data), "--out", str(out), "--iters", "3", "--device", "cpu", "--val-split", "",
               "--no-progress"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    lines = (out / "replicas.txt").read_text().splitlines()
    assert lines[-1] == "identical: True"
    checksums = {line.split(": ")[1] for line in lines[:-1]}
    assert len(lines[:-1]) == 2 and len(checksums) == 1
    initial = load_config(config_path)
    torch.manual_seed(initial.train.seed)
    assert weights_checksum(build_model(initial)) not in checksums, "the replicas must have trained"
