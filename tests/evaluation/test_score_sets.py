"""benchmarks/score_sets.py: the mean, and a row is the model scored on the sequences its set names."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_script


def _module() -> ModuleType:
    return load_script("benchmarks/score_sets.py")


def test_the_mean_weights_each_set_by_its_sequences() -> None:
    ss = _module()
    assert ss.weighted_mean({"a": 0.8, "b": 0.5}, {"a": 10, "b": 30, "c": 99}) == pytest.approx((8 + 15) / 40)


def test_a_row_is_the_model_scored_on_the_sequences_its_set_names(tmp_path: Path) -> None:
    from vknet_data.datasets import kitti_step_sequences
    from vknet_data.synth import SynthConfig, write_sequences
    from vknet_eval.evaluate import evaluate_stq
    from vknet_model.bundled import resolve_model
    from vknet_model.pipeline import Pipeline

    ss = _module()
    model = resolve_model(None)
    sets = {"x": ss.SynthSet(seed=7, first=2000, count=1), "y": ss.SynthSet(seed=11, first=3000, count=1)}
    result = ss.run([model], tmp_path / "sets", sets, frames=2, progress=False)
    row = result["rows"][0]
    assert result["sets"]["y"]["seed"] == 11 and set(row["sets"]) == {"x", "y"}
    # The same sequences written independently, scored by a pipeline of the same model.
    write_sequences(tmp_path / "own", sequences=1, seed=11, split="val", first_sequence=3000,
                    cfg=SynthConfig(frames=2), progress=False)
    pipeline = Pipeline.from_model(model)
    own = evaluate_stq(pipeline, kitti_step_sequences(tmp_path / "own", "val"), pipeline.data)
    assert row["sets"]["y"]["STQ"] == pytest.approx(own["STQ"], abs=1e-4)
    assert row["mean_STQ"] == pytest.approx((row["sets"]["x"]["STQ"] + row["sets"]["y"]["STQ"]) / 2, abs=1e-4)
