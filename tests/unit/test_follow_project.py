"""A copied or moved project's MLflow store writes artifacts into its own mlruns/, not the original's."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from fluxir.tracking.runs import follow_project, start_run


def _locations(db: Path) -> list[str]:
    with sqlite3.connect(db) as con:
        return [loc for (loc,) in con.execute("SELECT artifact_location FROM experiments")]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_a_copy_logs_into_its_own_mlruns(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    monkeypatch.chdir(original)
    with start_run("first", "fluxir", uri="sqlite:///mlruns.db", repo_root=None):
        mlflow.log_text("a", "a.txt")
    shutil.copytree(original, copy)
    before = _files(original)

    # another process, as a real copy is used (MLflow keeps a store per URI string within a process)
    code = (
        "import mlflow; from fluxir.tracking.runs import start_run\n"
        "with start_run('second', 'fluxir', uri='sqlite:///mlruns.db', repo_root=None) as run:\n"
        "    mlflow.log_text('b', 'b.txt'); print(run.info.artifact_uri)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=copy, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    artifact_uri = done.stdout.strip().splitlines()[-1]
    assert str(copy) in artifact_uri and str(original) not in artifact_uri
    assert _files(original) == before  # nothing written into the original
    assert all(str(original) not in loc for loc in _locations(copy / "mlruns.db"))
    assert any(str(original) in loc for loc in _locations(original / "mlruns.db"))


def test_artifacts_kept_elsewhere_on_purpose_stay(tmp_path: Path) -> None:
    db = tmp_path / "project" / "mlruns.db"
    db.parent.mkdir()
    elsewhere = tmp_path / "artifacts"
    (elsewhere / "mlruns").mkdir(parents=True)  # no store file beside it: a deliberate artifact root
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE experiments (artifact_location TEXT)")
        con.execute("INSERT INTO experiments VALUES (?)", (f"{elsewhere}/mlruns/1",))
    assert follow_project(f"sqlite:///{db}") == []
    assert _locations(db) == [f"{elsewhere}/mlruns/1"]
