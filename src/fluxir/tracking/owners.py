"""Which process owns an MLflow run, and ending the runs whose process died without ending them.

Every run the project opens is tagged with its owner: ``fluxir.host``, ``fluxir.pid`` and
``fluxir.pid_started`` (the process's start time, so a pid the system has since reused is not taken for
the owner). A process killed hard (SIGKILL: a Prefect serve process group stopped, an out-of-memory kill)
never ends its runs, and MLflow shows them RUNNING forever. :func:`end_orphaned_runs`, called when a
pipeline run or a top-level run starts, ends every run of the experiment that is still RUNNING, was owned
by a process of this host, and whose process is gone: status KILLED, with an ``error`` tag saying why.
Runs owned on other hosts are left alone (their processes cannot be seen from here), and so is any run
whose owner cannot be told (no tags, a process we may not inspect).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

from fluxir.errors import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

HOST_TAG = "fluxir.host"
PID_TAG = "fluxir.pid"
STARTED_TAG = "fluxir.pid_started"
MAX_SWEPT = 1000
"""Runs looked at per sweep; a sweep runs at every start, so a backlog larger than this clears in steps."""


def process_identity(pid: int | None = None) -> tuple[int, int]:
    """``(pid, start time in whole seconds)`` of process ``pid`` (default: this one)."""
    import psutil

    pid = os.getpid() if pid is None else pid
    return pid, int(psutil.Process(pid).create_time())


def owner_tags(owner: tuple[int, int] | None = None) -> dict[str, str]:
    """The owner tags of a run owned by ``owner`` (``(pid, start time)``, default: this process)."""
    pid, started = owner or process_identity()
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: str(started)}


def is_alive(pid: int, started: int) -> bool:
    """Whether process ``pid`` started at ``started`` still runs on this host (a zombie does not)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        # one second of slack: the start time is rounded to whole seconds when it is recorded
        return abs(int(proc.create_time()) - started) <= 1 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # not ours to inspect: it may well be alive
        return True


def _owner(tags: dict[str, str]) -> tuple[int, int] | None:
    try:
        return int(tags[PID_TAG]), int(tags[STARTED_TAG])
    except (KeyError, ValueError):
        return None


def end_orphaned_runs(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    """End KILLED the RUNNING runs of ``experiment_ids`` whose owner process on this host is gone; their ids.

    Housekeeping on the way to opening a run: a failure is a warning, never an error of the caller.
    """
    try:
        return _end_orphaned_runs(client, experiment_ids)
    except Exception as exc:  # noqa: BLE001 - the run being opened matters more
        log.warning(
            "MLflow: runs left RUNNING were not checked (%s: %s)", type(exc).__name__, redact(str(exc))
        )
        return []


def _end_orphaned_runs(client: MlflowClient, experiment_ids: list[str]) -> list[str]:
    from mlflow.entities import RunStatus

    host = socket.gethostname()
    if "'" in host or "\\" in host:  # not a name a filter string can quote; leave its runs alone
        return []
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'",
        max_results=MAX_SWEPT,
    )
    ended = []
    for run in runs:
        owner = _owner(run.data.tags)
        if owner is None or is_alive(*owner):
            continue
        run_id = run.info.run_id
        client.set_tag(run_id, "error", f"its process {owner[0]} on {host} ended without ending the run")
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
        ended.append(run_id)
    if ended:
        log.info("MLflow: ended %d run(s) KILLED whose process is gone: %s", len(ended), ", ".join(ended))
    return ended
