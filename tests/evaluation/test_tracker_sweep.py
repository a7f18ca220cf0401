"""benchmarks/tracker_sweep.py: replayed network outputs score exactly like a live run, and the grid parser."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script


def _module() -> ModuleType:
    return load_script("benchmarks/tracker_sweep.py")


def test_grid_is_typed_like_the_tracker_config_and_bad_names_are_refused() -> None:
    from vknet_model.config import TrackerConfig

    ts = _module()
    grid = ts.parse_grid(["match_score_thr=0.5,0.7", "memo_frames=5,15"], TrackerConfig())
    assert grid == {"match_score_thr": [0.5, 0.7], "memo_frames": [5, 15]}
    assert isinstance(grid["memo_frames"][0], int)
    with pytest.raises(ValueError, match="expected NAME=V1,V2"):
        ts.parse_grid(["match_thr=0.5"], TrackerConfig())


def test_a_replayed_setting_scores_as_a_live_run(tmp_path: Path) -> None:
    import dataclasses

    from vknet_data.datasets import kitti_step_sequences
    from vknet_data.synth import SynthConfig, write_sequences
    from vknet_eval.evaluate import evaluate_stq
    from vknet_model.pipeline import Pipeline

    ts = _module()
    write_sequences(tmp_path, sequences=2, seed=7, split="val", first_sequence=2000, cfg=SynthConfig(frames=4),
                    progress=False)
    result = ts.run(None, tmp_path, "val", {"match_score_thr": [0.0, 0.9]})
    assert result["frames"] == 8 and [r["setting"] for r in result["rows"]] == [
        "model's own", "match_score_thr=0.0", "match_score_thr=0.9"]
    # Every replayed row equals a live run of the pipeline with that tracker setting.
    model = Path(result["model"])
    sequences = kitti_step_sequences(tmp_path, "val")
    for row in result["rows"][::2]:
        live = Pipeline.from_model(model)
        cfg = live.tracker_config
        live.set_tracker_config(dataclasses.replace(cfg, match_score_thr=row["match_score_thr"]))
        scores = evaluate_stq(live, sequences, live.data)
        assert scores["STQ"] == pytest.approx(row["STQ"], abs=1e-4), row["setting"]
