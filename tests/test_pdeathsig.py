"""Processes that die with the grader (grading.pdeathsig): a command started with
:func:`command_prefix` never outlives the process that started it, however early that one dies."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from grading.pdeathsig import command_prefix
from support import REPO, alive

pytestmark = pytest.mark.skipif(not command_prefix(), reason="setpriv is not installed")

# A parent that starts ``sleep 600`` through the prefix, prints the sleeper's pid and then dies:
# at once (before the prefix could have asked for the death signal), or after a pause.
PARENT = """\
import os, subprocess, sys, time
sys.path.insert(0, {root!r})
from grading.pdeathsig import command_prefix
prefix = command_prefix() if {use_prefix} else []
child = subprocess.Popen([*prefix, "sleep", "600"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep({pause})
os._exit(0)
"""


def orphans(n: int, pause: float, use_prefix: bool = True) -> list[int]:
    """Start ``n`` parents that each die ``pause`` s after starting their sleeper; return the
    sleepers still running 5 s later (killed before returning)."""
    sleepers = []
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", PARENT.format(root=str(REPO), use_prefix=use_prefix, pause=pause)],
                             capture_output=True, text=True, timeout=60)
        sleepers.append(int(out.stdout.split()[0]))
    deadline = time.monotonic() + 5
    while alive(set(sleepers)) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = sorted(alive(set(sleepers)))
    for pid in left:
        os.kill(pid, 9)
    return left


def test_a_command_dies_with_a_parent_that_dies_later():
    """Is a command killed when the process that started it dies while it runs?"""
    assert orphans(3, pause=0.5) == []


def test_a_command_dies_with_a_parent_that_died_before_it_asked_for_the_signal():
    """Does a command whose parent died at once, before ``setpriv`` could ask for the death
    signal, exit instead of running on as an orphan?"""
    assert orphans(20, pause=0.0) == []


def test_without_the_prefix_the_commands_outlive_their_parents():
    """Does the first two tests' setup leave orphans without the prefix (so they prove something)?"""
    assert len(orphans(3, pause=0.0, use_prefix=False)) == 3


def test_the_prefix_is_empty_off_the_main_thread_unless_asked_for():
    """Is the prefix empty in a thread (which may end long before the command should), unless the
    caller says its threads outlive the command?"""
    seen = {}

    def look() -> None:
        seen["default"] = command_prefix()
        seen["any"] = command_prefix(from_any_thread=True)

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    assert seen["default"] == [] and seen["any"] == command_prefix()
