"""benchmarks/threshold_sweep.py: replayed network outputs score exactly like a live run, and the grid parser."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script


def _module() -> ModuleType:
    return load_script("benchmarks/threshold_sweep.py")


def test_grid_is_typed_like_the_config_fields_and_bad_names_are_refused() -> None:
    from vknet_model.config import PostprocessConfig, TrackerConfig

    ts = _module()
    grid = ts.parse_grid(["match_score_thr=0.5,0.7", "memo_frames=5,15", "mask_thr=0.4"],
                         PostprocessConfig(), TrackerConfig())
    assert grid == {"match_score_thr": [0.5, 0.7], "memo_frames": [5, 15], "mask_thr": [0.4]}
    assert isinstance(grid["memo_frames"][0], int)
    with pytest.raises(ValueError, match="expected NAME=V1,V2"):
        ts.parse_grid(["match_thr=0.5"], PostprocessConfig(), TrackerConfig())


def test_a_score_threshold_below_the_trackers_start_is_flagged() -> None:
    import dataclasses

    from vknet_model.config import PostprocessConfig, TrackerConfig

    ts = _module()
    post, tracker = PostprocessConfig(instance_score_thr=0.25), TrackerConfig(init_score_thr=0.25)
    assert not ts.keeps_things_without_ids(post, tracker)
    assert ts.keeps_things_without_ids(dataclasses.replace(post, instance_score_thr=0.2), tracker)
    assert not ts.keeps_things_without_ids(dataclasses.replace(post, instance_score_thr=0.2),
                                           dataclasses.replace(tracker, init_score_thr=0.2))


def test_every_row_scores_as_a_live_run_with_its_setting(tmp_path: Path) -> None:
    import dataclasses

    from vknet_data.datasets import kitti_step_sequences
    from vknet_data.synth import SynthConfig, write_sequences
    from vknet_eval.evaluate import evaluate_stq
    from vknet_model.pipeline import Pipeline

    ts = _module()
    write_sequences(tmp_path, sequences=2, seed=7, split="val", first_sequence=2000, cfg=SynthConfig(frames=4),
                    progress=False)
    result = ts.run(None, tmp_path, "val", {"match_score_thr": [0.0, 0.9], "instance_score_thr": [0.9]})
    assert result["frames"] == 8 and [r["setting"] for r in result["rows"]] == [
        "model's own", "match_score_thr=0.0", "match_score_thr=0.9",
        "instance_score_thr=0.9", "instance_score_thr=0.9 match_score_thr=0.0",
        "instance_score_thr=0.9 match_score_thr=0.9"]
    # A replayed row equals a live run of the pipeline with its assembly and tracker settings; a recording is
    # made per assembly setting (a stale one would score the high score threshold like the model's own).
    model = Path(result["model"])
    sequences = kitti_step_sequences(tmp_path, "val")
    rows = result["rows"]
    assert rows[3]["STQ"] != rows[0]["STQ"]
    assert [r["voids_kept_things"] for r in rows] == [False] * 6  # 0.9 and the model's own: not below its start
    for row in (rows[0], rows[2], rows[4]):
        live = Pipeline.from_model(model)
        live.set_postprocess(dataclasses.replace(live.postprocess, instance_score_thr=row["instance_score_thr"]))
        live.set_tracker_config(dataclasses.replace(live.tracker_config, match_score_thr=row["match_score_thr"]))
        scores = evaluate_stq(live, sequences, live.data)
        assert scores["STQ"] == pytest.approx(row["STQ"], abs=1e-4), row["setting"]
