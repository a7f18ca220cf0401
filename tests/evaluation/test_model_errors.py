"""benchmarks/model_errors.py: the per-thing classification of found / merged / partial / missed on hand maps, and
a short run on the bundled model."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[2]


def _module() -> ModuleType:
    return load_script("benchmarks/model_errors.py")


def test_frame_errors_classifies_each_thing() -> None:
    me = _module()
    gt = np.full((10, 40), 7000, dtype=np.int64)       # stuff
    gt[:, 0:10] = 13001                                 # car 1 (100 px)
    gt[:, 10:20] = 13002                                # car 2, beside it
    gt[:, 30:34] = 11001                                # a person
    pred = np.full_like(gt, 7000)
    pred[:, 0:20] = 13005                               # one segment over both cars: merged, twice
    # the person is missed in the output, but kernel 1 has it (score 0.2 < 0.35); kernel 0 covers both cars
    kernels = np.zeros((2, 10, 40), dtype=bool)
    kernels[0, :, 0:20] = True
    kernels[1, :, 30:34] = True
    counts, false = me.frame_errors(gt, pred, kernels, np.array([0.9, 0.2]), 0.35, 1000)
    found, merged, partial, missed, kernel, scored, dropped = counts[0, 1:]   # all three in the smallest bin
    assert counts[0, 0] == 3 and counts[1:].sum() == 0
    assert (found, merged, partial, missed) == (0, 2, 0, 1)
    assert (kernel, scored, dropped) == (1, 0, 0)      # the person's kernel exists but would not vote
    # The person's kernel votes but the assembly dropped its segment: "dropped"; kept, it is not.
    counts, _ = me.frame_errors(gt, pred, kernels, np.array([0.9, 0.5]), 0.35, 1000, np.array([True, False]))
    assert counts[0, 7] == 1
    counts, _ = me.frame_errors(gt, pred, kernels, np.array([0.9, 0.5]), 0.35, 1000, np.array([True, True]))
    assert counts[0, 7] == 0
    assert false == 1                                  # the merged segment matches no single car
    pred[:, 10:20] = 13006                              # car 2 is its own segment; car 1 keeps half of its own
    pred[:, 0:5] = 7000
    counts, false = me.frame_errors(gt, pred, kernels, np.array([0.9, 0.2]), 0.35, 1000)
    assert tuple(counts[0, 1:5]) == (1, 0, 1, 1)       # IoU exactly 0.5 is not found: partial
    assert false == 1


def test_model_errors_runs_on_the_bundled_model(tmp_path: Path) -> None:
    from vknet_data.synth import SynthConfig, write_sequences

    me = _module()
    write_sequences(tmp_path, sequences=1, seed=0, split="val", first_sequence=1000, cfg=SynthConfig(frames=3),
                    progress=False)
    result = me.run(ROOT / "vknet_model" / "assets" / "tiny_synth.pt", tmp_path, 1)
    assert result["frames"] == 3 and result["things"] > 0
    overall = result["overall"]
    assert overall["kernel_found"] >= overall["kernel_found_scored"] >= overall["dropped"]
    assert abs(sum(overall[k] for k in ("found", "merged", "partial", "missed")) - 1.0) < 1e-9
