"""Long-running processes by PID file: launch in a session of their own, recognise, stop by signal.

A PID file (JSON) records the PID and the process's start time; it is trusted only while a process with
that PID still has that start time, so a PID the system has since reused is never signalled. Stopping
sends SIGTERM to the process group and to descendants that left it, then SIGKILL to what is left after
a timeout (Prefect workers ignore a first SIGTERM).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fluxir.io import write_json_atomic


def create_time(pid: int) -> float | None:
    """The start time (epoch seconds) of process ``pid``, or None if it is gone (or a zombie)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except psutil.Error:
        return None


def read_pid(path: Path) -> dict[str, Any] | None:
    """The record of a PID file whose process is still the one that wrote it, else None."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    created = create_time(int(rec.get("pid", 0)))
    if created is None or abs(created - float(rec.get("create_time", -1))) > 1.0:
        return None
    return rec


def launch(
    cmd: Sequence[str], cwd: Path, env: Mapping[str, str], log: Path, pid_file: Path, **info: Any
) -> int:
    """Start ``cmd`` as the leader of a new session, output appended to ``log``; write its PID file.

    The process outlives its caller, and :func:`stop_pids` can signal its whole group. ``info`` is
    recorded in the PID file beside the PID, start time, command and log.
    """
    with open(log, "ab") as out:
        out.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            list(cmd), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    created = create_time(proc.pid) or time.time()
    record = {"pid": proc.pid, "create_time": created, "cmd": list(cmd), **info, "log": str(log)}
    write_json_atomic(pid_file, record)
    return proc.pid


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or '(no log)'."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_pid(pid: int, timeout: float = 10.0) -> str:
    """SIGTERM the process group of ``pid`` (and stray descendants), SIGKILL what is left after ``timeout``.

    Returns 'terminated', 'killed' or 'gone'.
    """
    return stop_pids({"": pid}, timeout)[""]


def stop_pids(pids: Mapping[str, int], timeout: float = 10.0) -> dict[str, str]:
    """:func:`stop_pid` for several processes at once (one shared timeout, in the given order)."""
    import psutil

    trees: dict[str, list[Any]] = {}
    outcome = {}
    for name, pid in pids.items():
        try:
            root = psutil.Process(pid)
            trees[name] = [root, *root.children(recursive=True)]
        except psutil.Error:
            outcome[name] = "gone"
    for name, procs in trees.items():
        _signal_all(pids[name], procs, signal.SIGTERM)
    _, alive = psutil.wait_procs([p for procs in trees.values() for p in procs], timeout=timeout)
    for name, procs in trees.items():
        left = [p for p in procs if p in alive]
        outcome[name] = "killed" if left else "terminated"
        if left:
            _signal_all(pids[name], left, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=5)
    return outcome


def _signal_all(pgid: int, procs: list[Any], sig: signal.Signals) -> None:
    import psutil

    try:
        os.killpg(pgid, sig)  # launched as session leaders: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:  # descendants that left the group (new sessions) get it directly
        try:
            p.send_signal(sig)
        except psutil.Error:
            pass
