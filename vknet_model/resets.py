"""When a stream of frames starts a new video: one rule for the tracker and for the bag reader (no torch)."""

from __future__ import annotations


def video_break(last_stamp: float | None, last_frame_id: str | None, stamp: float | None, frame_id: str,
                gap_s: float) -> str:
    """Why a frame starts a new video after the previous one ("" when it continues it): another frame_id,
    time going backwards (a bag loops), or a gap longer than ``gap_s`` seconds.

    The one rule for both the Pipeline's tracker resets and the bag reader's sequence boundaries, so that a
    replayed bag is scored in the pieces the tracker saw.
    """
    if last_frame_id is not None and frame_id != last_frame_id:
        return f"frame_id changed ({_short(last_frame_id)} -> {_short(frame_id)})"
    if stamp is not None and last_stamp is not None:
        if stamp < last_stamp:
            return f"time jumped back by {last_stamp - stamp:.3f} s"
        if stamp - last_stamp > gap_s:
            return f"gap of {stamp - last_stamp:.3f} s > {gap_s} s"
    return ""


def _short(frame_id: str, limit: int = 60) -> str:
    """A frame_id as it goes into a log line: a sender controls it, and a 10000-character one must not flood."""
    return repr(frame_id) if len(frame_id) <= limit else f"{frame_id[:limit]!r}... ({len(frame_id)} chars)"
