"""A child started with popen_tied_to_parent dies when its parent is killed; a plain Popen child does not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = """
import subprocess, sys, time
from vknet_ros.child_process import popen_tied_to_parent
cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
child = popen_tied_to_parent(cmd) if sys.argv[1] == "tied" else subprocess.Popen(cmd)
print(child.pid, flush=True)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _child_after_killing_parent(mode: str) -> bool:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5.0
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = _alive(pid)
    if alive:
        os.kill(pid, signal.SIGKILL)
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_a_tied_child_dies_with_its_parent_and_a_plain_one_does_not() -> None:
    assert not _child_after_killing_parent("tied"), "the tied child outlived its killed parent"
    assert _child_after_killing_parent("plain"), "control: a plain child should have survived"
