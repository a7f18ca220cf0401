"""Child processes that cannot outlive the process that started them.

The replay starts the node as its own process (in its own session, so a Ctrl-C in the terminal reaches
only the replay, which then stops the node in order). If the replay is killed outright, that node would keep
running and answering on the replay's DDS domain, and a later replay or test on the same domain would score
its answers. On Linux the child asks the kernel for SIGINT when its parent dies (``PR_SET_PDEATHSIG``);
elsewhere it is started the same way without that guarantee.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1


def _signal_me_when_the_parent_dies() -> None:
    """Runs in the child between fork and exec. The kernel ties this to the thread that forked the child."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT))


def popen_tied_to_parent(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, **kwargs)`` whose child gets SIGINT when the calling thread's process dies.

    Call it from a thread that lives as long as the child should (the main thread, typically).
    """
    if sys.platform.startswith("linux"):
        kwargs["preexec_fn"] = _signal_me_when_the_parent_dies
    return subprocess.Popen(cmd, **kwargs)
