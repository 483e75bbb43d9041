"""One MLflow policy for every stage: ask the server once, briefly, before the work; then stop in one line,
or run untracked with one warning that the stage's report records too.

A stage needs MLflow when it runs under a pipeline (``dvc repro``, the Prefect flow) or opens a run of its
own (``train.track``, ``benchmark.track``). Before any heavy work :func:`check` asks an ``http(s)`` server
for ``/health``, waiting at most :data:`PROBE_SECONDS` (MLflow's own client would retry for minutes, and
wait forever on a server that accepts connections and never answers). A local store (the default
``sqlite:///mlruns.db``, a folder) is not asked: it is a file, always there. If the server is silent:

- ``tracking.required`` (None, the default, means: true exactly when ``$MLFLOW_TRACKING_URI`` is set, i.e.
  someone pointed this run at a server on purpose): the stage stops with one line, exit 1,
  ``MLflow at <uri> did not answer within 3 s; start it (make services) or set tracking.required=false``;
- otherwise: one warning line, the stage runs untracked, and its report folder gets ``tracking.json``
  saying so (:func:`write_report`).

A server found silent stays silent for the rest of the process: later checks return at once without a
second warning, and the project's tracking calls are skipped (:func:`is_silent`). A call that fails in the
middle of a run (:func:`lost`) is a warning and a report note in either mode (the stage's work is its
product; the checkpoint or the files are kept), and the server is asked once more so a dead one costs one
bounded wait, not one per call. Calls that do go out are bounded by
:data:`fluxir.tracking.runs.HTTP_LIMITS` (seconds per request, two retries).

``tracking.json`` is written only by a run that could not track, and removed by one that could (or did
not need to): a run with the server up, or with the local sqlite store, writes exactly the files it
always did, so a stage's DVC outputs differ only where tracking really failed. Every URI shown is
redacted (:func:`fluxir.errors.redact`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from fluxir.errors import EnvironmentFailure, redact
from fluxir.io import write_json_atomic
from fluxir.net import http_status

if TYPE_CHECKING:
    from fluxir.config import Config

log = logging.getLogger(__name__)

URI_ENV = "MLFLOW_TRACKING_URI"
PROBE_SECONDS = 3.0
"""How long a stage waits for ``GET /health`` before it calls the server silent."""
REPORT_NAME = "tracking.json"
"""Written into a stage's report folder only when the stage could not (fully) track."""

_silent: dict[str, str] = {}  # URI -> why this process calls it silent (found so once: never asked again)
_notes: dict[str, list[str]] = {}  # stage -> what its report records about tracking (empty: all well)


class MlflowUnavailable(EnvironmentFailure):
    """``tracking.required`` and the MLflow server did not answer (or refused the stage's run): exit 1."""


def is_required(cfg: Config) -> bool:
    """``tracking.required``; unset (None): whether ``$MLFLOW_TRACKING_URI`` is set (and not empty)."""
    if cfg.tracking.required is not None:
        return cfg.tracking.required
    return bool(os.environ.get(URI_ENV))


def answers(uri: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether the tracking server at ``uri`` answers ``GET /health`` within ``timeout`` seconds (any HTTP
    status counts: MLflow will say what is wrong). A URI that is not ``http(s)`` is a local store: True."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return True
    host = parts.netloc.rpartition("@")[2]  # credentials never travel with the probe (nor break its URL)
    health = urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
    return http_status(health, timeout) is not None


def check(stage: str, uri: str, required: bool) -> bool:
    """Whether ``stage`` can track at ``uri``: True when the server answers (or the store is local).

    A silent server stops the stage when ``required`` (:class:`MlflowUnavailable`); else the stage is
    warned about once, its report records it (:func:`write_report`), and this returns False.
    """
    if uri in _silent:
        _note(stage, _silent[uri], start=True)
        return False
    if answers(uri):
        return True
    if required:
        raise MlflowUnavailable(
            f"MLflow at {redact(uri)} did not answer within {PROBE_SECONDS:g} s; "
            "start it (make services) or set tracking.required=false"
        )
    _silent[uri] = f"no MLflow server answers at {redact(uri)} within {PROBE_SECONDS:g} s"
    _note(stage, _silent[uri], start=True)
    return False


def refused(stage: str, uri: str, exc: BaseException, required: bool) -> None:
    """Opening the stage's run failed after the server answered the probe: stop (``required``) or go on
    untracked (warned, recorded)."""
    if required:
        raise MlflowUnavailable(
            f"MLflow at {redact(uri)} did not open the {stage} run ({_first_line(exc)}); "
            "check the server (make services) and its credentials, or set tracking.required=false"
        ) from exc
    lost(stage, uri, exc, what="to open the run")


def lost(stage: str, uri: str, exc: BaseException, what: str = "a tracking call") -> None:
    """A tracking call of ``stage`` failed: one warning (once per reason) and a report note. A server that
    no longer answers is silent from now on, so the calls after this one cost nothing."""
    if uri not in _silent and not answers(uri):
        _silent[uri] = f"MLflow at {redact(uri)} stopped answering during the run"
    # The note is what the report keeps: the kind of error, never its text (it names objects and addresses
    # that differ between runs). The warning line carries the text.
    note = _silent.get(uri) or f"MLflow at {redact(uri)} failed {what} ({type(exc).__name__})"
    _note(stage, note, detail=f"{type(exc).__name__}: {_first_line(exc)}")


def is_silent(uri: str) -> bool:
    """Whether this process found the server at ``uri`` silent (tracking calls to it are skipped)."""
    return uri in _silent


def ran_untracked(stage: str) -> bool:
    """Whether ``stage`` has a tracking problem on record in this process (its report will say so)."""
    return bool(_notes.get(stage))


def _note(stage: str, note: str, start: bool = False, detail: str = "") -> None:
    notes = _notes.setdefault(stage, [])
    if note in notes:
        return
    notes.append(note)
    if start:
        log.warning(
            "MLflow: stage %s runs untracked: %s; start it (make services) and rerun to record the stage, "
            "or set tracking.required=true to stop instead",
            stage,
            note,
        )
    else:
        log.warning("MLflow: stage %s is not fully tracked: %s (%s)", stage, note, redact(detail))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(lines[0]) if lines else type(exc).__name__


def report_folder(
    stage: str, cfg: Config, root: str | os.PathLike = ".", reports: str | os.PathLike | None = None
) -> Path:
    """Where ``stage`` writes its report, under the project ``root``: its section's ``report_dir`` (train,
    benchmark), else ``<reports>/<stage>`` (``reports`` defaults to ``tracking.reports_dir``)."""
    section = getattr(cfg, stage.replace("-", "_"), None)
    own = getattr(section, "report_dir", None)
    if own:
        return Path(root) / own
    return Path(root) / (cfg.tracking.reports_dir if reports is None else reports) / stage


def write_report(stage: str, folder: str | os.PathLike) -> Path | None:
    """``<folder>/tracking.json`` with this process's notes about ``stage``, or no such file when there are
    none (a stale one from an earlier run is removed). Returns the file written, if any."""
    notes = _notes.pop(stage, [])
    path = Path(folder) / REPORT_NAME
    if not notes:
        path.unlink(missing_ok=True)
        return None
    return write_json_atomic(path, {"stage": stage, "tracked": False, "warnings": notes})


def forget() -> None:
    """Drop what this process learnt (silent servers, notes): for tests that run many stages in one process."""
    _silent.clear()
    _notes.clear()
