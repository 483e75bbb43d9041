"""MLflow helpers against a real sqlite tracking store (no server): nested runs, params, tables, lineage."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from fluxir.tracking import runs as tracking

ABC_SHA256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # sha256(b"abc")


def _git(cwd, *args):
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A fresh git repo with one commit and a dvc.lock holding b"abc"."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # never find a repo above tmp_path
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.lock").write_bytes(b"abc")
    _git(root, "init", "-q")
    _git(root, "add", "dvc.lock")
    _git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A sqlite tracking store in tmp_path; cwd there too, since artifacts default to ./mlruns."""
    import mlflow.tracking._tracking_service.utils as mlflow_uri

    uri = f"sqlite:///{tmp_path}/mlruns.db"
    monkeypatch.chdir(tmp_path)
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; setenv first so undo restores the original.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setattr(mlflow_uri, "_tracking_uri", None)
    yield uri
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


def test_tracking_uri_env_wins_then_configured_then_default(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert tracking.tracking_uri("") == "sqlite:///mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////tmp/other.db")
    assert tracking.tracking_uri("http://127.0.0.1:5000") == "sqlite:////tmp/other.db"


def test_lineage_tags_in_and_outside_git(repo, tmp_path):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    tags = tracking.lineage_tags(repo)
    assert tags == {
        "git.sha": head,
        "git.dirty": "false",
        "mlflow.source.git.commit": head,
        "dvc.lock.sha256": ABC_SHA256,
    }
    (repo / "new.py").write_text("x = 1\n")
    assert tracking.lineage_tags(repo)["git.dirty"] == "true"

    outside = tmp_path / "plain"
    outside.mkdir()
    assert tracking.lineage_tags(outside) == {"git.sha": "unknown", "git.dirty": "unknown"}


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("db_passwd", True),
        ("aws_secret_access_key", True),
        ("AWS_ACCESS_KEY_ID", True),
        ("key_id", True),
        ("hfToken", True),
        ("api-key", True),
        ("credentials", True),
        ("max_tokens", False),
        ("tokenizer_dir", False),
        ("keep_quantile", False),
        ("s3_key", False),
    ],
)
def test_secret_key_detection(key, secret):
    assert tracking.is_secret_key(key) is secret


def test_redact_drops_secrets_at_every_depth():
    cfg = {"a": 1, "token": "x", "storage": {"endpoint": "e", "secret_key": "s", "inner": {"password": "p"}}}
    assert tracking.redact(cfg) == {"a": 1, "storage": {"endpoint": "e", "inner": {}}}


def test_nested_runs_params_tables_and_tags_read_back(store, repo):
    import mlflow
    from mlflow import MlflowClient

    cfg = {
        "model": {"base": "tiny", "dtype": "float32"},
        "train": {"lr": 1e-5, "crops": [[1024, 768], [768, 768]], "notes": "n" * 7000},
        "storage": {
            "endpoint": "http://admin:hunter2@127.0.0.1:8333",
            "aws_access_key_id": "AKIAEXAMPLE",
            "aws_secret_access_key": "shh",
        },
    }
    table = pd.DataFrame({"rank": [16, 32], "psnr": [21.5, 22.25]})

    with tracking.start_run(
        "ablation", "fluxir-test", uri=store, repo_root=repo, tags={"table": "2"}
    ) as parent:
        logged = tracking.log_config(cfg)
        with tracking.start_run("r16", "fluxir-test", nested=True, repo_root=None) as child1:
            mlflow.log_metric("psnr", 21.5)
        path = tracking.log_table(table, "se_rank")
    # A child started elsewhere (no active run) under an explicit parent id.
    with tracking.start_run("r32", "fluxir-test", parent_run_id=parent.info.run_id, repo_root=None) as child2:
        pass

    client = MlflowClient(tracking_uri=store)
    run = client.get_run(parent.info.run_id)
    params = run.data.params
    assert params["model.base"] == "tiny" and params["train.lr"] == "1e-05"
    assert params["train.crops"] == "[[1024, 768], [768, 768]]"
    assert len(params["train.notes"]) == 6000 and params["train.notes"].endswith("...[truncated]")
    assert params["storage.endpoint"] == "http://admin:***@127.0.0.1:8333"
    assert not any("access_key" in k for k in params)
    assert "hunter2" not in str(params) and "AKIAEXAMPLE" not in str(params) and "shh" not in str(params)
    assert params == logged

    tags = run.data.tags
    assert tags["dvc.lock.sha256"] == ABC_SHA256 and tags["git.dirty"] == "false" and tags["table"] == "2"
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert tags["git.sha"] == head and len(head) == 40
    assert run.info.status == "FINISHED" and run.info.run_name == "ablation"

    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["r16", "r32"]
    assert {c.info.run_id for c in children} == {child1.info.run_id, child2.info.run_id}
    assert client.get_run(child1.info.run_id).data.metrics == {"psnr": 21.5}

    assert path == "tables/se_rank.json"
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "tables")] == [path]
    back = mlflow.load_table(path, run_ids=[parent.info.run_id])
    pd.testing.assert_frame_equal(back, table, check_dtype=False)


def test_failed_run_is_marked_and_bad_table_names_rejected(store):
    from mlflow import MlflowClient

    with pytest.raises(RuntimeError, match="boom"):
        with tracking.start_run("broken", "fluxir-test", uri=store, repo_root=None) as run:
            raise RuntimeError("boom")
    assert MlflowClient(tracking_uri=store).get_run(run.info.run_id).info.status == "FAILED"
    with tracking.start_run("ok", "fluxir-test", uri=store, repo_root=None):
        with pytest.raises(ValueError, match="table name '../x': must be"):
            tracking.log_table(pd.DataFrame({"a": [1]}), "../x")


def test_importing_tracking_does_not_import_mlflow():
    code = "import sys, fluxir.tracking.runs; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
