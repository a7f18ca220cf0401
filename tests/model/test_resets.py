"""The one rule for where a video breaks (tracker resets and bag sequence boundaries)."""

from __future__ import annotations

from vknet_model.resets import video_break


def test_video_breaks_on_frame_id_time_back_and_gaps_only() -> None:
    assert video_break(None, None, 5.0, "cam", 1.0) == ""                     # the first frame continues nothing
    assert video_break(5.0, "cam", 5.1, "cam", 1.0) == ""
    assert video_break(5.0, "cam", 6.0, "cam", 1.0) == ""                     # exactly the gap: still the video
    assert "gap of 1.500 s > 1.0 s" in video_break(5.0, "cam", 6.5, "cam", 1.0)
    assert "time jumped back by 0.500 s" in video_break(5.0, "cam", 4.5, "cam", 1.0)
    assert "frame_id changed ('cam' -> 'left')" in video_break(5.0, "cam", 5.1, "left", 1.0)
    assert video_break(5.0, "cam", None, "cam", 1.0) == ""                    # no stamps: only frame_id decides


def test_a_huge_frame_id_is_shortened_in_the_reason() -> None:
    """A sender controls frame_id: a 10000-character one went whole into every reset log line."""
    reason = video_break(5.0, "cam", 5.1, "x" * 10_000, 1.0)
    assert len(reason) < 200 and "(10000 chars)" in reason
