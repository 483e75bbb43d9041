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


def test_an_unreachable_server_never_stops_the_stage(cfg, tmp_path, monkeypatch, caplog):
    from fluxir.net import free_port

    port = free_port()  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv(lineage.PARENT_ENV, "0" * 32)
    with caplog.at_level("WARNING", logger="fluxir.tracking.lineage"):
        with lineage.stage_run("degrade", cfg, root=tmp_path) as run_id:
            ran = True
    assert ran and run_id is None
    assert f"no MLflow server answers at http://127.0.0.1:{port}" in caplog.text


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
