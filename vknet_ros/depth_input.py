"""Pairs each colour frame with the depth image taken with it, by stamp, through message_filters.

The colour frames keep their own path (the one-frame slot, never a backlog); the pairing only watches them go
by. Both streams are fed into a ``message_filters.ApproximateTimeSynchronizer`` (slop: the ``depth_slop_s``
parameter), whose pairs are kept by colour stamp for the worker, which asks for its frame's depth when it
takes the frame. A frame whose depth is late is waited for briefly, and only while depth is arriving at all:
a depth camera that stopped costs the colour path nothing.

message_filters is a standard ROS package (``ros-<distro>-message-filters``); in a venv of PyPI wheels it
comes with ros2_cli_kit. Where it is missing, :func:`available` says so and the node runs without 3D.
"""

from __future__ import annotations

import collections
import functools
import importlib
import threading
import time
from typing import Any

KEPT_PAIRS = 8          # pairs not yet taken by the worker (it takes the newest frame; older pairs age out)
SYNC_QUEUE = 10         # messages per stream the synchronizer looks through
DEPTH_ALIVE_S = 1.0     # wait for a late depth only if one arrived this recently


@functools.cache
def available() -> bool:
    """Whether message_filters' Python module imports here."""
    try:
        importlib.import_module("message_filters")
    except ImportError:
        return False
    return True


def stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


class DepthPairing:
    """Colour and depth messages in, the depth image paired with a given colour frame out."""

    def __init__(self, slop_s: float) -> None:
        import message_filters

        self._colour = message_filters.SimpleFilter()
        self._depth = message_filters.SimpleFilter()
        self._sync = message_filters.ApproximateTimeSynchronizer([self._colour, self._depth], SYNC_QUEUE, slop_s)
        self._sync.registerCallback(self._on_pair)
        self._pairs: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._ready = threading.Condition()
        self._last_depth = -float("inf")
        self.received = 0  # depth messages seen

    def colour(self, msg: Any) -> None:
        """A colour frame went by (it also goes into the node's slot)."""
        self._colour.signalMessage(msg)

    def depth(self, msg: Any) -> None:
        with self._ready:
            self._last_depth = time.monotonic()
            self.received += 1
        self._depth.signalMessage(msg)

    def _on_pair(self, colour: Any, depth: Any) -> None:
        with self._ready:
            self._pairs[stamp_ns(colour)] = depth
            while len(self._pairs) > KEPT_PAIRS:
                self._pairs.popitem(last=False)
            self._ready.notify_all()

    def take(self, colour_stamp_ns: int, wait_s: float) -> Any | None:
        """The depth message paired with the colour frame of this stamp, waiting up to ``wait_s`` for it while
        depth is arriving; None when there is none (no depth within the slop, or no depth stream)."""
        deadline = time.monotonic() + wait_s
        with self._ready:
            while colour_stamp_ns not in self._pairs:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or time.monotonic() - self._last_depth > DEPTH_ALIVE_S:
                    return None
                self._ready.wait(remaining)
            depth = self._pairs.pop(colour_stamp_ns)
            # Pairs of older frames will never be asked for: the worker only goes forward.
            for stamp in [s for s in self._pairs if s < colour_stamp_ns]:
                del self._pairs[stamp]
            return depth
