"""MLflow helpers: tracking URI, lineage tags, (nested) runs, flattened config params, tables.

MLflow is imported inside the functions that need it, so ``import fluxir.tracking.runs`` stays cheap.
Nothing that looks like a credential is logged: :func:`log_config` drops secret-looking keys
(:func:`redact`) and masks passwords embedded in URLs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from fluxir.errors import redact as redact_text
from fluxir.io import sha256_file

if TYPE_CHECKING:
    import mlflow
    import pandas as pd

DEFAULT_TRACKING_URI = "sqlite:///mlruns.db"
# MLflow rejects longer param values (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in 3.17).
MAX_PARAM_VALUE_LENGTH = 6000
TRUNCATION_MARK = "...[truncated]"
TABLES_DIR = "tables"

# Key segments that name a secret, matched after splitting a key on separators and camelCase, so
# `aws_secret_access_key`, `hfToken` and `db.password` are dropped while `max_tokens` or
# `tokenizer_dir` are kept.
_SECRET_WORDS = {"password", "passwd", "pwd", "secret", "token", "credential", "credentials"}
_SECRET_PAIRS = {("key", "id"), ("access", "key"), ("api", "key"), ("private", "key"), ("auth", "key")}
_SECRET_JOINED = {"keyid", "accesskey", "apikey", "privatekey", "secretkey", "authtoken", "accesstoken"}
_TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
"""MLflow's HTTP client limits unless the user set them: its defaults (120 s per request, 7 retries with
exponential backoff) make a stage wait minutes, or forever on a server that accepts and never answers."""


def bound_http_requests() -> None:
    """Set :data:`HTTP_LIMITS` in the environment where the user has not (MLflow reads them per request)."""
    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)


@contextmanager
def brief_requests(seconds: int = 1) -> Iterator[None]:
    """MLflow's HTTP requests in the block make one try of ``seconds``: for a last call to a server already
    found silent (ending a run on the way out), which must not wait out :data:`HTTP_LIMITS` again. MLflow
    reads these variables per request; the user's values come back after the block."""
    brief = {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(seconds), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    saved = {key: os.environ.get(key) for key in brief}
    os.environ.update(brief)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def tracking_uri(configured: str) -> str:
    """The tracking URI to use: ``$MLFLOW_TRACKING_URI`` if set, else ``configured``, else local sqlite.

    Every way the project reaches MLflow goes through here, so this is also where its HTTP requests get
    bounded timeouts (:func:`bound_http_requests`).
    """
    bound_http_requests()
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or DEFAULT_TRACKING_URI


# Columns of MLflow's SQL store that hold artifact locations (absolute: MLflow resolves them at creation).
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


def follow_project(uri: str) -> list[str]:
    """Point a project-local store's artifact locations at the project it now lives in; returns the old roots.

    MLflow stores every artifact location absolute, so a copied or moved project's ``mlruns.db`` would
    keep writing artifacts into the original's ``mlruns/`` (or into a folder that is gone). For a local
    ``sqlite:///.../mlruns.db``, an experiment whose artifacts live in ``<old>/mlruns/<id>`` is re-pointed
    to ``<here>/mlruns/<id>`` (with its runs, logged models and model versions) when ``<old>`` is another
    copy of this project (its own store file is not this one) or no longer exists. Artifacts kept on
    purpose elsewhere (a folder with no store file beside it, S3) are left as they are.
    """
    import sqlite3

    prefix = "sqlite:///"
    if not uri.startswith(prefix) or not Path(uri[len(prefix) :]).is_file():
        return []
    db = Path(uri[len(prefix) :]).absolute()
    here = db.resolve().parent
    olds: set[str] = set()
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            locations = [loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")]
        except sqlite3.Error:
            return []
        for loc in locations:
            path = PurePosixPath(str(loc or "").removeprefix("file://"))
            if not path.is_absolute() or path.parent.name != "mlruns":
                continue
            old = Path(path.parent.parent)
            store = old / db.name
            moved = not old.exists() or (store.is_file() and not store.samefile(db))
            if old != here and moved:
                olds.add(str(old))
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for old in sorted(olds):
            for table, column in _ARTIFACT_COLUMNS:
                if table not in tables:
                    continue
                for scheme in ("", "file://"):
                    before, after = f"{scheme}{old}/mlruns/", f"{scheme}{here}/mlruns/"
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608 (fixed names)
                        f"WHERE substr({column}, 1, ?) = ?",
                        (after, len(before) + 1, len(before), before),
                    )
        con.commit()
    return sorted(olds)


def _git(repo_root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=repo_root, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def lineage_tags(repo_root: str | Path) -> dict[str, str]:
    """Tags tying a run to its code and data: git commit, dirty flag, sha256 of ``dvc.lock``.

    Outside a git checkout (or without git) the commit and dirty flag are ``"unknown"``; the
    ``dvc.lock`` tag is present only when the file is.
    """
    root = Path(repo_root)
    sha = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain") if sha else None
    tags = {
        "git.sha": sha or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
    }
    if sha:
        tags["mlflow.source.git.commit"] = sha  # shown by the MLflow UI
    lock = root / "dvc.lock"
    if lock.is_file():
        tags["dvc.lock.sha256"] = sha256_file(lock)
    return tags


def open_run(
    name: str,
    experiment: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    nested: bool = False,
    uri: str | None = None,
    repo_root: str | Path | None = ".",
) -> mlflow.ActiveRun:
    """:func:`start_run` without the ``with``: the run stays active until ``mlflow.end_run(status)``.

    For a caller that must tell a failure to open the run (tracking) from a failure of its own work.
    """
    import mlflow

    from fluxir.tracking.owners import end_orphaned_runs, owner_tags

    if uri is not None:
        mlflow.set_tracking_uri(tracking_uri(uri))
    follow_project(str(mlflow.get_tracking_uri()))  # a copied project writes into its own mlruns/
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    new_top_level = not (nested or parent_run_id or mlflow.active_run() or os.environ.get("MLFLOW_RUN_ID"))
    if new_top_level:  # runs a killed process left RUNNING end KILLED (fluxir.tracking.owners)
        end_orphaned_runs(mlflow.MlflowClient(), [experiment_id])
    all_tags = {**(lineage_tags(repo_root) if repo_root is not None else {}), **owner_tags(), **(tags or {})}
    return mlflow.start_run(
        run_name=name,
        nested=nested,
        parent_run_id=parent_run_id,
        tags={k: str(v) for k, v in all_tags.items()},
    )


@contextmanager
def start_run(
    name: str,
    experiment: str,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    nested: bool = False,
    uri: str | None = None,
    repo_root: str | Path | None = ".",
) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run named ``name`` in ``experiment`` (created if missing); end it on exit.

    ``nested=True`` makes it a child of the active run; ``parent_run_id`` makes it a child of that run
    when none is active (e.g. an ablation run in another process). ``uri`` goes through
    :func:`tracking_uri`; None keeps MLflow's current URI. Lineage tags from ``repo_root`` are added
    (None skips them), and the owner tags of this process (:mod:`fluxir.tracking.owners`); ``tags`` win
    over them. A run left by an exception is marked FAILED. Starting a new top-level run first ends KILLED
    the runs of the experiment whose process died without ending them.
    """
    with open_run(name, experiment, parent_run_id, tags, nested, uri, repo_root) as run:
        yield run


def _segments(key: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(key))  # camelCase -> camel Case
    return [s for s in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if s]


def is_secret_key(key: str) -> bool:
    """Whether a config key looks like it holds a credential."""
    words = _segments(key)
    if any(w in _SECRET_WORDS or w in _SECRET_JOINED for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:], strict=False))


def redact(d: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``d`` without secret-looking keys (see :func:`is_secret_key`), recursing into mappings."""
    return {k: redact(v) if isinstance(v, Mapping) else v for k, v in d.items() if not is_secret_key(k)}


def param_value(value: Any) -> str:
    text = redact_text(str(value))  # a URL's password or token, wherever it sits in the value
    if len(text) > MAX_PARAM_VALUE_LENGTH:
        text = text[: MAX_PARAM_VALUE_LENGTH - len(TRUNCATION_MARK)] + TRUNCATION_MARK
    return text


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and other values are kept as leaves."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, prefix=f"{key}."))
        else:
            flat[key] = v
    return flat


def log_config(cfg: Mapping[str, Any] | Any) -> dict[str, str]:
    """Log a nested config (a mapping or a dataclass) to the active run as ``section.key`` params.

    Secret-looking keys are dropped, passwords in URLs masked, and values longer than MLflow's limit
    truncated (ending in ``...[truncated]``). Returns the params as logged.
    """
    import mlflow

    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        cfg = dataclasses.asdict(cfg)
    params = {k: param_value(v) for k, v in flatten(redact(cfg)).items()}
    mlflow.log_params(params)
    return params


def log_table(df: pd.DataFrame, name: str) -> str:
    """Log ``df`` to the active run as the table artifact ``tables/<name>.json``; returns that path.

    One fixed path per name, so ``mlflow.load_table(path, run_ids=...)`` stacks the same table across runs.
    """
    import mlflow

    if not _TABLE_NAME.match(name):
        raise ValueError(f"table name {name!r}: must be letters, digits, '_', '.', '-' (no slashes)")
    artifact_file = f"{TABLES_DIR}/{name}.json"
    mlflow.log_table(data=df, artifact_file=artifact_file)
    return artifact_file
