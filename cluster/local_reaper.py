"""Ends what is left of a local Ray cluster once the driver that started it has died.

    python cluster/local_reaper.py ROOT_PID ...    (stdin: a pipe whose write end only the driver holds)

A driver that starts its own cluster (`ray.init()` without an address) shares its fate with the GCS
and the raylet (Ray starts them with PR_SET_PDEATHSIG), and the workers follow the raylet within
about 2 s. The dashboard agent and the runtime-env agent do not: they notice that the raylet is
gone within 2 s, but a raylet that died without a SIGTERM makes each of them report it to the GCS
first (ray._private.process_watcher.report_raylet_error_logs), and that call waits its full 60 s
time-out against the dead GCS. Ray 2.60 has no setting for that time-out.

This stdlib-only process (started by cluster/launch.py in a session of its own, so that Ctrl-C in a
terminal does not reach it) keeps a list of the cluster's processes: the node processes the driver
started (ROOT_PIDs) and all their descendants, rescanned every _SCAN_S. End of file on stdin means
the driver died: every listed process still running (same pid and start time, so a reused pid is
never hit) gets SIGTERM, and SIGKILL after _GRACE_S. A byte on stdin means the driver shut the
cluster down itself: nothing to do. Linux only (/proc).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time

logger = logging.getLogger("mentor.local_reaper")

_SCAN_S = 1.0  # how often the list of the cluster's processes is refreshed
_GRACE_S = 1.0  # between SIGTERM and SIGKILL

Process = tuple[int, int]  # (pid, start time in clock ticks since boot): a pid that was not reused


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a running process, None when there is none (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def cluster_processes(roots: list[int]) -> set[Process]:
    """The root processes still running and all their descendants."""
    parents: dict[int, list[int]] = {}
    started: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            parents.setdefault(stat[0], []).append(int(entry))
            started[int(entry)] = stat[1]
    found, todo = set(), [pid for pid in roots if pid in started]
    while todo:
        pid = todo.pop()
        found.add((pid, started[pid]))
        todo.extend(parents.get(pid, []))
    return found


def _still_running(processes: set[Process]) -> set[Process]:
    return {(pid, start) for pid, start in processes if (_stat(pid) or (0, None))[1] == start}


def end(processes: set[Process]) -> int:
    """SIGTERM the processes that still run, SIGKILL those left after _GRACE_S; how many there were."""
    running = _still_running(processes)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in running:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + _GRACE_S
        while sig == signal.SIGTERM and time.monotonic() < deadline and _still_running(running):
            time.sleep(0.05)
        running = _still_running(running)
    return len(processes)


def watch(roots: list[int], driver_pipe: int = 0) -> None:
    """Refresh the list until the driver's pipe speaks (a clean shutdown) or closes (its death)."""
    known: set[Process] = set()
    while True:
        known = (known & _still_running(known)) | cluster_processes(roots)
        ready, _, _ = select.select([driver_pipe], [], [], _SCAN_S)
        if ready:
            if os.read(driver_pipe, 1):
                return
            count = end(known)
            logger.warning("the driver died: ended %d process(es) left of its local Ray cluster", count)
            return


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver's Ctrl-C is not for this process
    watch([int(pid) for pid in argv])


if __name__ == "__main__":
    main(sys.argv[1:])
