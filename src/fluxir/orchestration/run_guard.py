"""One pipeline run at a time per project, and its settings hold only while it runs.

A flow run applies its profile and overrides to ``params.yaml`` (so that ``dvc repro`` runs and
``dvc.lock`` records exactly what the stages used) and puts the file back when it ends, whether it
completed, failed or was cancelled: overrides never persist after a run, and a later plain ``dvc repro``
runs the committed settings. Two runs at once would race on that file and on the stage outputs, so the
guard holds an exclusive lock on ``.fluxir/pipeline.lock`` for the whole run; a second run is refused
with the first one's pid (the deployment's concurrency limit makes Prefect queue it before it gets here).

A run killed outright (SIGKILL, a lost machine) cannot put the file back. The original is journalled in
``.fluxir/params.before.yaml`` before the first edit; the kernel drops a dead process's lock, so the next
run that takes the lock and finds a journal restores ``params.yaml`` from it first
(:func:`recover_params` does the same on its own, e.g. when the services start).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from fluxir.errors import UserError
from fluxir.io import write_bytes_atomic

log = logging.getLogger(__name__)

STATE_DIR = ".fluxir"
LOCK_NAME = "pipeline.lock"
JOURNAL_NAME = "params.before.yaml"
PARAMS_NAME = "params.yaml"


class PipelineBusyError(UserError):
    """Another pipeline run holds this project."""


def _restore_from_journal(project: Path) -> bool:
    journal = project / STATE_DIR / JOURNAL_NAME
    if not journal.is_file():
        return False
    original = journal.read_bytes()
    params = project / PARAMS_NAME
    if not params.is_file() or params.read_bytes() != original:
        write_bytes_atomic(params, original)
        log.warning("params.yaml: put back as it was before a pipeline run that did not finish")
    journal.unlink()
    return True


@contextlib.contextmanager
def _project_lock(project: Path) -> Iterator[None]:
    state = project / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise PipelineBusyError(
                f"{project}: another pipeline run (pid {holder}) is running in this project; wait for it "
                "to end (the deployment fluxir/full queues runs for you)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def recover_params(project: str | os.PathLike) -> bool:
    """Put ``params.yaml`` back from the journal of a run that was killed; True if a journal was found.

    Does nothing while a run holds the project (its journal is live), so it is safe to call any time.
    """
    project = Path(project)
    try:
        with _project_lock(project):
            return _restore_from_journal(project)
    except PipelineBusyError:
        return False


@contextlib.contextmanager
def pipeline_run(
    project: str | os.PathLike,
    settings: Mapping[str, Any],
    apply: Callable[[Path, Mapping[str, Any]], None],
) -> Iterator[Path]:
    """Hold the project, apply ``settings`` to its params.yaml with ``apply``, and put it back at the end.

    Yields the params file. Raises :class:`PipelineBusyError` (before touching anything) when another run
    holds the project.
    """
    project = Path(project)
    params = project / PARAMS_NAME
    with _project_lock(project):
        _restore_from_journal(project)  # a killed run's settings must not leak into this one
        journal = project / STATE_DIR / JOURNAL_NAME
        write_bytes_atomic(journal, params.read_bytes())
        try:
            apply(params, settings)
            yield params
        finally:
            _restore_from_journal(project)
