"""Spin an rclpy executor in a background thread, and stop it before anything it uses is destroyed.

``threading.Thread(target=executor.spin)`` followed by ``executor.shutdown()`` is racy in rclpy: shutdown
does not wait for the spinning thread, and destroys the executor's guard condition while that thread may
still be waiting on it; destroying nodes and the context next can then leave the thread failing or busy.
Here the thread spins in short slices and is joined before the executor is shut down.
"""

from __future__ import annotations

import threading
from typing import Any

SLICE_S = 0.05  # the longest the thread waits in one spin, i.e. how fast it notices the stop request


class BackgroundSpinner:
    """Spins ``executor`` in a daemon thread from construction until :meth:`stop`."""

    def __init__(self, executor: Any, name: str = "vknet_spinner") -> None:
        self.executor = executor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=SLICE_S)

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop spinning, join the thread, then shut the executor down; False if the thread did not end."""
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        self.executor.shutdown(timeout_sec=2.0)
        return not self._thread.is_alive()
