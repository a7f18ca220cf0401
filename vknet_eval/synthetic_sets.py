"""The synthetic sets every choice about the bundled weights is made or reported on, in one place.

Thresholds are tuned on one set and scores reported on others; if the tools that tune and the tools that
report each kept their own seeds, a tuning set could silently become a reporting set. None of these seeds is
the training stream's (generator seed 1000), so no training run sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SynthSet:
    """``vknet synth --split val --seed SEED --first-sequence FIRST --sequences COUNT --frames 30``."""

    seed: int
    first: int
    count: int


SETS = {
    "tuning": SynthSet(seed=7, first=2000, count=10),     # thresholds are tuned here
    "held-out": SynthSet(seed=0, first=1000, count=10),   # the README's held-out figure
    "third": SynthSet(seed=11, first=3000, count=20),
    "fourth": SynthSet(seed=13, first=4000, count=30),
}
SPLIT = "val"
FRAMES = 30


def ensure_set(folder: Path, spec: SynthSet, frames: int = FRAMES, progress: bool = True) -> Path:
    """``folder`` holding ``spec``'s sequences, generated if it does not exist. A folder with other sequences
    in it is refused rather than mixed into (it may be a user's own data).

    Raises:
        ValueError: ``folder`` holds other sequences, or only the first of ``spec``'s (an interrupted run).
    """
    from vknet_data.synth import SynthConfig, write_sequences

    expected = [f"{i:04d}" for i in range(spec.first, spec.first + spec.count)]
    images = folder / "images" / SPLIT
    if images.is_dir():
        found = sorted(p.name for p in images.iterdir() if p.is_dir())
        if found and found == expected[:len(found)] and len(found) < len(expected):
            raise ValueError(f"{folder} holds {len(found)} of the {len(expected)} sequences of seed {spec.seed} "
                             f"(an interrupted generation?): remove it to have it made again")
        if found != expected:
            raise ValueError(f"{folder} holds sequences {found[:3]}... where {expected[0]}-{expected[-1]} "
                             f"(seed {spec.seed}) were expected: give another --root")
        return folder
    write_sequences(folder, sequences=spec.count, seed=spec.seed, split=SPLIT, first_sequence=spec.first,
                    cfg=SynthConfig(frames=frames), progress=progress)
    return folder
