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


# ----------------------------------------------------------------------------------------------
# The MLflow policy (fluxir.tracking.policy): ask once, briefly; stop in one line or run untracked, loudly


@pytest.fixture
def fresh_policy():
    from fluxir.tracking import policy

    policy.forget()
    yield policy
    policy.forget()


@pytest.fixture
def silent_port():
    """A port that accepts connections and never reads or answers (a hung server)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        server.listen(8)
        yield server.getsockname()[1]


def _cfg(required):
    from fluxir.config import Config, TrackingConfig

    return Config(tracking=TrackingConfig(required=required))


def test_required_defaults_to_whether_the_uri_was_set_in_the_environment(fresh_policy, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert fresh_policy.is_required(_cfg(None)) is False
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert fresh_policy.is_required(_cfg(None)) is False
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert fresh_policy.is_required(_cfg(None)) is True
    assert fresh_policy.is_required(_cfg(False)) is False
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert fresh_policy.is_required(_cfg(True)) is True


def test_a_silent_server_is_found_silent_within_the_probe_time(fresh_policy, silent_port):
    import time

    from fluxir.net import free_port

    t0 = time.monotonic()
    assert not fresh_policy.answers(f"http://bob:pw@127.0.0.1:{silent_port}")
    assert time.monotonic() - t0 < fresh_policy.PROBE_SECONDS + 2
    assert not fresh_policy.answers(f"http://127.0.0.1:{free_port()}")  # closed port: at once
    assert fresh_policy.answers("sqlite:////nonexistent/mlruns.db")  # a local store is never asked


def test_required_and_silent_is_one_line_exit_1_without_the_password(fresh_policy, silent_port):
    from fluxir.errors import report

    uri = f"http://bob:hunter2@127.0.0.1:{silent_port}"
    with pytest.raises(fresh_policy.MlflowUnavailable) as caught:
        fresh_policy.check("filter", uri, required=True)
    assert str(caught.value) == (
        f"MLflow at http://bob:***@127.0.0.1:{silent_port} did not answer within 3 s; "
        "start it (make services) or set tracking.required=false"
    )
    assert report("filter", caught.value) == 1
    assert not fresh_policy.is_silent(uri)  # nothing learnt: the stage stopped


def test_not_required_warns_once_and_the_report_records_it(fresh_policy, tmp_path, caplog):
    from fluxir.net import free_port

    uri = f"http://bob:hunter2@127.0.0.1:{free_port()}"
    with caplog.at_level("WARNING", logger="fluxir.tracking"):
        assert fresh_policy.check("train", uri, required=False) is False
        assert fresh_policy.check("train", uri, required=True) is False  # known silent: no second wait
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "MLflow: stage train runs untracked: no MLflow server answers" in warning
    assert "hunter2" not in warning and fresh_policy.ran_untracked("train")

    path = fresh_policy.write_report("train", tmp_path / "reports" / "train")
    note = f"no MLflow server answers at {fresh_policy.redact(uri)} within 3 s"
    assert json_of(path) == {"stage": "train", "tracked": False, "warnings": [note]}
    assert fresh_policy.write_report("train", tmp_path / "reports" / "train") is None  # a tracked rerun
    assert not path.exists(), "a stale note is removed by a run that had no tracking problem"


def test_a_failure_mid_run_silences_a_dead_server_and_keeps_no_varying_text(fresh_policy, tmp_path):
    from fluxir.net import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    fresh_policy.lost("train", uri, ConnectionError("object at 0x7f00dead: refused"))
    assert fresh_policy.is_silent(uri)
    path = fresh_policy.write_report("train", tmp_path)
    assert json_of(path)["warnings"] == [f"MLflow at {uri} stopped answering during the run"]


def json_of(path):
    import json

    return json.loads(path.read_text())


def test_brief_requests_make_one_short_try_and_restore_the_users_limits(monkeypatch):
    import os

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    with tracking.brief_requests():
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1"
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_run_logger_stops_logging_to_mlflow_after_one_failure(fresh_policy, tmp_path, monkeypatch, caplog):
    import mlflow

    from fluxir.train.runlog import LOSS_CSV, RunLog

    calls = []

    def broken(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("the server went away")

    monkeypatch.setattr(mlflow, "log_metrics", broken)
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: "http://127.0.0.1:9")  # closed: silent
    run_log = RunLog(tmp_path, mlflow_on=True)
    with caplog.at_level("WARNING", logger="fluxir.tracking"):
        for step in (1, 2, 3):
            row = {"step": step, "loss": 0.5, "mse": 0.4, "pixel": 0.1, "lr": 1e-4}
            run_log.step(row, {"grad_norm": 1.0})
    assert len(calls) == 1 and run_log.mlflow_on is False
    assert len((tmp_path / LOSS_CSV).read_text().splitlines()) == 3  # the curve goes on without MLflow
    assert len(caplog.records) == 1 and "stopped answering during the run" in caplog.text


# ----------------------------------------------------------------------------------------------
# Runs left RUNNING by a process that is gone (fluxir.tracking.owners)


def test_a_new_top_level_run_ends_the_runs_of_dead_processes_killed(store):
    import socket

    from mlflow import MlflowClient

    from fluxir.tracking import owners

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid names no process now (or, reused, one with another start time)
    client = MlflowClient(tracking_uri=store)
    experiment = client.create_experiment("fluxir-owners")
    here = socket.gethostname()

    def running(name, **owner):
        tags = {owners.HOST_TAG: owner.get("host", here), owners.PID_TAG: str(owner["pid"]),
                owners.STARTED_TAG: str(owner["started"])}  # fmt: skip
        return client.create_run(experiment, run_name=name, tags=tags).info.run_id

    me = owners.process_identity()
    orphan = running("orphan", pid=dead.pid, started=0)
    alive = running("alive", pid=me[0], started=me[1])
    elsewhere = running("elsewhere", pid=dead.pid, started=0, host=f"{here}-other")
    with tracking.start_run("next", "fluxir-owners", uri=store, repo_root=None) as run:
        tags = client.get_run(run.info.run_id).data.tags
    assert (tags[owners.PID_TAG], tags[owners.HOST_TAG]) == (str(me[0]), here)
    killed = client.get_run(orphan)
    assert killed.info.status == "KILLED" and f"its process {dead.pid} on {here}" in killed.data.tags["error"]
    assert client.get_run(alive).info.status == "RUNNING"
    assert client.get_run(elsewhere).info.status == "RUNNING"  # another host's processes are not seen here
