"""fluxir.tracking.lineage: the pipeline's MLflow run tree (parent per pipeline run, child per stage)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fluxir.config import Config, TrackingConfig
from fluxir.tracking import lineage


@pytest.fixture(autouse=True)
def fresh_policy():
    """Each test starts with no server known silent and no report notes (fluxir.tracking.policy)."""
    from fluxir.tracking import policy

    policy.forget()
    yield
    policy.forget()


@pytest.fixture
def cfg(tmp_path, monkeypatch) -> Config:
    # mlflow.set_tracking_uri (called by fluxir.tracking.runs.start_run) exports MLFLOW_TRACKING_URI, which
    # wins over the configured URI: start every test without it (monkeypatch removes it again after).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return Config(
        tracking=TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlruns.db'}", experiment="lineage-test")
    )


def _client(cfg: Config):
    from mlflow import MlflowClient

    return MlflowClient(cfg.tracking.uri)


def test_outside_a_pipeline_nothing_is_logged(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv(lineage.PARENT_ENV, raising=False)
    with lineage.stage_run("filter", cfg, root=tmp_path) as run_id:
        assert run_id is None
    assert not (tmp_path / "mlruns.db").exists()


def test_stage_joins_the_parent_and_the_stages_own_run_logs_into_the_child(cfg, tmp_path, monkeypatch):
    """What train and benchmark do: open their own run inside stage_run; it must be the child."""
    from fluxir.tracking.runs import start_run

    monkeypatch.chdir(tmp_path)
    parent = lineage.open_pipeline_run(
        cfg, tmp_path, name="prefect test", tags={"prefect.flow_run_id": "f-1"}
    )
    monkeypatch.setenv(lineage.PARENT_ENV, parent)
    reports = tmp_path / "reports"
    (reports / "score").mkdir(parents=True)
    (reports / "score" / "summary.json").write_text(
        '{"images": 8, "device": "cpu", "metrics": {"piqe": {"mean": 41.5}}}'
    )
    (reports / "validation" / "score").mkdir(parents=True)
    (reports / "validation" / "score" / "manifest.md").write_text("# ok\n")

    with lineage.stage_run("score", cfg, root=tmp_path, reports=reports) as child_id:
        assert os.environ[lineage.RUN_ID_ENV] == child_id
        with start_run("score", cfg.tracking.experiment, uri=cfg.tracking.uri, tags={"own": "yes"}) as run:
            assert run.info.run_id == child_id
            import mlflow

            mlflow.log_metric("own_metric", 3.0)
    assert lineage.RUN_ID_ENV not in os.environ

    child = _client(cfg).get_run(child_id)
    assert child.info.status == "FINISHED" and child.info.run_name == "score"
    tags = child.data.tags
    assert tags["mlflow.parentRunId"] == parent and tags["stage"] == "score"
    assert tags["prefect.flow_run_id"] == "f-1" and tags["profile"] == "tiny" and tags["own"] == "yes"
    assert child.data.metrics == {"own_metric": 3.0, "summary.images": 8.0, "summary.metrics.piqe.mean": 41.5}
    assert child.data.params["score.metrics"] == "['piqe']" and "generate.width" not in child.data.params
    paths = {a.path for a in _client(cfg).list_artifacts(child_id)}
    assert paths == {"summary", "validation"}
    assert _client(cfg).get_run(parent).info.status == "RUNNING", "the flow owns its parent's status"


def test_run_facts_go_to_the_stage_child_and_the_log_never_to_a_file(cfg, tmp_path, monkeypatch, caplog):
    parent = lineage.open_pipeline_run(cfg, tmp_path)
    monkeypatch.setenv(lineage.PARENT_ENV, parent)
    caplog.set_level("INFO", logger="fluxir")
    before = sorted(p.name for p in tmp_path.iterdir())
    with lineage.stage_run("generate", cfg, root=tmp_path, reports=tmp_path / "reports") as child_id:
        lineage.log_run_facts("generate", {"made_now": 6, "seconds": 1.5, "images_per_second": None})
    assert _client(cfg).get_run(child_id).data.metrics == {"run.made_now": 6.0, "run.seconds": 1.5}
    assert "generate run: made_now 6, seconds 1.5" in caplog.text
    lineage.log_run_facts("generate", {"seconds": 2.0})  # outside a stage run: the log only
    assert _client(cfg).get_run(child_id).data.metrics["run.seconds"] == 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written beside the stage's files


def test_a_failing_stage_marks_its_run_failed(cfg, tmp_path, monkeypatch):
    parent = lineage.open_pipeline_run(cfg, tmp_path)
    monkeypatch.setenv(lineage.PARENT_ENV, parent)
    with pytest.raises(ValueError, match="row 3"):
        with lineage.stage_run("filter", cfg, root=tmp_path, reports=tmp_path) as child_id:
            raise ValueError("manifest: row 3 fails")
    child = _client(cfg).get_run(child_id)
    assert child.info.status == "FAILED" and child.data.tags["error"] == "ValueError: manifest: row 3 fails"
    lineage.close_pipeline_run(parent, cfg, tmp_path, "FAILED", error="filter failed")
    assert _client(cfg).get_run(parent).info.status == "FAILED"


def test_an_unreachable_server_not_required_warns_and_the_report_says_so(cfg, tmp_path, monkeypatch, caplog):
    import dataclasses
    import json

    from fluxir.net import free_port

    port = free_port()  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv(lineage.PARENT_ENV, "0" * 32)
    untracked = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, required=False))
    with caplog.at_level("WARNING", logger="fluxir.tracking"):
        with lineage.stage_run("degrade", untracked, root=tmp_path) as run_id:
            ran = True
    assert ran and run_id is None
    assert len(caplog.records) == 1
    assert f"stage degrade runs untracked: no MLflow server answers at http://127.0.0.1:{port}" in caplog.text
    report = json.loads((tmp_path / "reports" / "degrade" / "tracking.json").read_text())
    assert report["tracked"] is False and report["warnings"] == [
        f"no MLflow server answers at http://127.0.0.1:{port} within 3 s"
    ]


def test_an_unreachable_server_required_stops_the_stage_before_its_work(cfg, tmp_path, monkeypatch):
    from fluxir.net import free_port
    from fluxir.tracking.policy import MlflowUnavailable

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # set: required
    monkeypatch.setenv(lineage.PARENT_ENV, "0" * 32)
    ran = False
    with pytest.raises(MlflowUnavailable, match="did not answer within 3 s; start it") as caught:
        with lineage.stage_run("degrade", cfg, root=tmp_path):
            ran = True
    assert not ran and caught.value.exit_status == 1
    assert not (tmp_path / "reports").exists()


def test_a_stage_that_needs_no_mlflow_never_asks_it(cfg, tmp_path, monkeypatch):
    from fluxir.net import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")  # required, and down
    monkeypatch.delenv(lineage.PARENT_ENV, raising=False)  # no pipeline, and no run of its own
    with lineage.stage_run("filter", cfg, root=tmp_path) as run_id:
        assert run_id is None
    from fluxir.tracking.policy import MlflowUnavailable

    with pytest.raises(MlflowUnavailable):  # a stage with a run of its own (train.track) does ask
        with lineage.stage_run("train", cfg, root=tmp_path, own_run=True):
            pass


def test_a_flow_without_mlflow_runs_untracked_when_not_required(cfg, tmp_path, monkeypatch):
    import dataclasses

    from fluxir.net import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    untracked = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, required=False))
    assert lineage.open_pipeline_run(untracked, tmp_path) == ""
    lineage.close_pipeline_run("", untracked, tmp_path, "FAILED", error="x")  # nothing to end


@pytest.mark.slow
def test_the_next_pipeline_run_ends_a_sigkilled_processes_runs_killed(cfg, tmp_path):
    """A process that opened a pipeline run (as the Prefect flow does) and a stage child is SIGKILLed: both
    stay RUNNING until the next pipeline run starts, which ends them KILLED."""
    import signal

    opener = textwrap.dedent(
        f"""
        import os, sys, time
        from fluxir.config import Config, TrackingConfig
        from fluxir.tracking import lineage
        cfg = Config(tracking=TrackingConfig(uri={cfg.tracking.uri!r}, experiment={cfg.tracking.experiment!r}))
        parent = lineage.open_pipeline_run(cfg, sys.argv[1])
        os.environ[lineage.PARENT_ENV] = parent
        with lineage.stage_run("generate", cfg, root=sys.argv[1]) as child:
            print(parent, child, flush=True)
            time.sleep(600)
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", lineage.PARENT_ENV)}
    proc = subprocess.Popen(
        [sys.executable, "-c", opener, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        parent, child = proc.stdout.readline().split()
        assert {_client(cfg).get_run(r).info.status for r in (parent, child)} == {"RUNNING"}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.stdout.close()
    assert {_client(cfg).get_run(r).info.status for r in (parent, child)} == {"RUNNING"}, "nobody ended them"

    mine = lineage.open_pipeline_run(cfg, tmp_path)
    for run_id in (parent, child):
        run = _client(cfg).get_run(run_id)
        assert run.info.status == "KILLED", run_id
        assert f"its process {proc.pid} on " in run.data.tags["error"]
    assert _client(cfg).get_run(mine).info.status == "RUNNING"  # its own process is alive
    lineage.close_pipeline_run(mine, cfg, tmp_path)


def test_secondary_ranks_log_nothing(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv(lineage.PARENT_ENV, lineage.open_pipeline_run(cfg, tmp_path))
    monkeypatch.setenv("RANK", "1")
    with lineage.stage_run("train", cfg, root=tmp_path) as run_id:
        assert run_id is None


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["/venv/bin/python", "/venv/bin/dvc", "repro"], True),
        (["python", "-m", "dvc", "repro", "-s", "generate"], True),
        (["dvc", "exp", "run", "--temp"], True),
        (["dvc", "--verbose", "repro"], True),
        (["dvc", "status"], False),
        (["python", "-m", "fluxir.stages.generate"], False),
        (["python", "dvc_helper.py", "repro"], False),
    ],
)
def test_recognises_dvc_runs(argv, expected):
    assert lineage._is_dvc_run(argv) is expected


def test_resolve_uri_anchors_relative_sqlite(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert lineage.resolve_uri("sqlite:///mlruns.db", tmp_path) == f"sqlite:///{tmp_path / 'mlruns.db'}"
    assert lineage.resolve_uri("sqlite:////abs/x.db", tmp_path) == "sqlite:////abs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert lineage.resolve_uri("sqlite:///mlruns.db", tmp_path) == "http://127.0.0.1:5000"


@pytest.mark.slow
def test_one_parent_per_dvc_repro(tmp_path):
    """Two stages of one `dvc repro` share a parent; the next `dvc repro` opens another."""
    stage = textwrap.dedent(
        """
        import sys
        from fluxir.config import Config, TrackingConfig
        from fluxir.tracking.lineage import stage_run
        cfg = Config(tracking=TrackingConfig(uri="sqlite:///mlruns.db", experiment="dvc-test"))
        with stage_run(sys.argv[1], cfg):
            open(sys.argv[1] + ".out", "w").write("done")
        """
    )
    (tmp_path / "stage.py").write_text(stage)
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  a: {cmd: python stage.py a, deps: [stage.py], outs: [{a.out: {cache: false}}]}\n"
        "  b: {cmd: python stage.py b, deps: [a.out], outs: [{b.out: {cache: false}}]}\n"
    )
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop(lineage.PARENT_ENV, None)
    env.pop("MLFLOW_TRACKING_URI", None)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True, env=env)
    for _ in range(2):
        done = subprocess.run([*dvc, "repro", "-f"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    runs = client.search_runs([client.get_experiment_by_name("dvc-test").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 2 and all(p.data.tags["fluxir.pipeline"] == "dvc" for p in parents)
    for p in parents:
        kids = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id)
        assert kids == ["a", "b"]
        assert p.info.status == "FINISHED"


def test_a_stage_running_untracked_gets_its_own_track_switch_off(cfg):
    from fluxir.stages import opens_own_run, without_own_run

    assert opens_own_run("benchmark", cfg) and opens_own_run("train", cfg)
    assert not opens_own_run("filter", cfg) and not opens_own_run("build-model", cfg)
    off = without_own_run("benchmark", cfg)
    assert (
        off.benchmark.track is False
        and off.train.track is True
        and off.benchmark.methods == cfg.benchmark.methods
    )
