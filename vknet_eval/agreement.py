"""How closely one model's run follows another's on the same frames (int8 against fp32, one backend against
another): stride-4 cells with the same class and panoptic id, and tracked things with the same identity.

Panoptic ids are compared up to renaming too: a segment's instance number is a name within its frame, so a
candidate segment that matches a reference one (IoU >= 0.5) takes the reference's number before cells are
compared; otherwise one segment more or fewer early in a frame would make every later one "differ".

Identity is compared up to renaming: a new model may number the tracks of a frame in another order (new
tracks are numbered in score order, and a score that moves a little can swap two), which is no change for a
user. A thing of the reference run is matched to the candidate's thing its mask overlaps with IoU >= 0.5;
the first match of a reference track fixes which candidate track it corresponds to, and from then on every
one of its things counts as consistent only if it is matched to that same track. Ids equal outright are
counted too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vknet_model.pipeline import FrameResult


@dataclass
class RunAgreement:
    label_divisor: int = 1000
    cells: int = 0
    class_cells_equal: int = 0
    panoptic_cells_equal: int = 0
    things: int = 0
    ids_equal: int = 0
    ids_consistent: int = 0
    _mapping: dict[int, int] = field(default_factory=dict)  # reference track id -> candidate track id

    def add(self, reference: FrameResult, candidate: FrameResult) -> None:
        self.cells += reference.class_cells.size
        self.class_cells_equal += int((reference.class_cells == candidate.class_cells).sum())
        renamed = _renamed(reference.panoptic_cells, candidate.panoptic_cells, self.label_divisor)
        self.panoptic_cells_equal += int((reference.panoptic_cells == renamed).sum())
        candidate_ids = {o.class_id * self.label_divisor + o.instance: o.track_id for o in candidate.objects}
        for thing in reference.objects:
            self.things += 1
            mask = reference.panoptic == thing.class_id * self.label_divisor + thing.instance
            ids, counts = np.unique(candidate.panoptic[mask], return_counts=True)
            best = int(ids[np.argmax(counts)])
            union = int(mask.sum()) + int((candidate.panoptic == best).sum()) - int(counts.max())
            if best not in candidate_ids or counts.max() / union < 0.5:
                continue
            matched = candidate_ids[best]
            self.ids_equal += int(matched == thing.track_id)
            self.ids_consistent += int(self._mapping.setdefault(thing.track_id, matched) == matched)

    def reset_tracks(self) -> None:
        """A new video: track ids start afresh in both runs' trackers."""
        self._mapping.clear()

    def summary(self) -> dict[str, float]:
        def share(count: int, total: int) -> float:
            return 100 * count / total if total else float("nan")

        return {"class_cells_equal_pct": share(self.class_cells_equal, self.cells),
                "panoptic_cells_equal_pct": share(self.panoptic_cells_equal, self.cells),
                "track_ids_equal_pct": share(self.ids_equal, self.things),
                "track_identity_kept_pct": share(self.ids_consistent, self.things), "things": self.things}


def _renamed(reference: np.ndarray, candidate: np.ndarray, label_divisor: int) -> np.ndarray:
    """``candidate``'s panoptic ids with each thing segment matching a reference thing segment (IoU >= 0.5) given
    that segment's id (IoU >= 0.5 makes the match one-to-one: reference segments are disjoint)."""
    out = candidate.copy()
    for ref_id in np.unique(reference):
        if ref_id % label_divisor == 0:  # stuff, void or crowd: no instance number to rename
            continue
        mask = reference == ref_id
        ids, counts = np.unique(candidate[mask], return_counts=True)
        best = ids[np.argmax(counts)]
        if best % label_divisor == 0:
            continue
        union = int(mask.sum()) + int((candidate == best).sum()) - int(counts.max())
        if counts.max() / union >= 0.5:
            out[candidate == best] = ref_id
    return out
