"""vknet_eval.synthetic_sets: the sets are the documented ones, made once and never mixed into."""

from __future__ import annotations

from pathlib import Path

import pytest

from vknet_eval.synthetic_sets import SETS, SynthSet, ensure_set


def test_the_documented_sets_are_apart_from_training_and_from_each_other() -> None:
    # 70 sequences; generator seeds the training stream (1000) never uses; no two sets share a seed.
    assert sum(s.count for s in SETS.values()) == 70
    assert 1000 not in {s.seed for s in SETS.values()}
    assert len({s.seed for s in SETS.values()}) == len(SETS)
    assert SETS["tuning"] != SETS["held-out"]


def test_a_set_is_generated_once_then_reused_and_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    spec = SynthSet(seed=3, first=500, count=2)
    folder = ensure_set(tmp_path / "s", spec, frames=2, progress=False)
    first_image = sorted((folder / "images" / "val" / "0500").iterdir())[0]
    stamp = first_image.stat().st_mtime_ns
    assert sorted(p.name for p in (folder / "images" / "val").iterdir()) == ["0500", "0501"]
    assert ensure_set(tmp_path / "s", spec, frames=2, progress=False) == folder
    assert first_image.stat().st_mtime_ns == stamp  # reused, not written again
    with pytest.raises(ValueError, match="seed 3"):
        ensure_set(tmp_path / "s", SynthSet(seed=3, first=600, count=2), frames=2, progress=False)
    with pytest.raises(ValueError, match=r"2 of the 3 sequences .* interrupted"):
        ensure_set(tmp_path / "s", SynthSet(seed=3, first=500, count=3), frames=2, progress=False)
