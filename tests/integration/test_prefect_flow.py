"""The Prefect deployment ``fluxir/full`` against a real Prefect server (fixtures in conftest.py).

One sharded run of the whole chain (build-model, generate, score, filter, degrade, train, benchmark) on the
tiny profile: it must exit 0, leave ``dvc status`` clean, spread its shards over both workers through S3,
publish the benchmark table, and build the MLflow run tree. Then a manifest with a broken row must stop
the chain with the row and the expectation in the Prefect logs.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest
from pipeline_run import (
    SHARDS,
    TINY_OVERRIDES,
    flow_run_logs,
    pipeline_parent_run,
    prefect_client,
    run,
    run_deployment,
    tool_env,
)

pytestmark = pytest.mark.slow
STAGES = ("build-model", "generate", "score", "filter", "degrade", "train", "benchmark")


def test_deployment_run_completes(finished_run, pipeline_services):
    assert finished_run.returncode == 0
    assert "Flow run finished successfully in 'Completed'" in finished_run.output
    print(
        f"services up in {pipeline_services['_started_seconds']} s; "
        f"deployment run (7 stages, 2+2 shards) in {finished_run.seconds:.1f} s"
    )


def test_dvc_status_is_clean_and_lock_has_every_stage(finished_run, pipeline_project, pipeline_services):
    import yaml

    # Checked by the flow with the run's settings in place: every stage is locked at what it ran with.
    logs = "\n".join(flow_run_logs(pipeline_services, finished_run.flow_run_id))
    assert "dvc status: Data and pipelines are up to date." in logs
    lock = yaml.safe_load((pipeline_project / "dvc.lock").read_text())
    assert set(STAGES) <= set(lock["stages"])
    # The lock records what ran (the overrides); params.yaml is the committed file again (they never persist).
    assert (
        lock["stages"]["train"]["params"]["params.yaml"]["train"]["max_steps"]
        == TINY_OVERRIDES["train.max_steps"]
    )
    assert run(["git", "status", "--porcelain", "params.yaml"], pipeline_project).strip() == ""
    assert not (pipeline_project / ".fluxir" / "params.before.yaml").exists()


def test_the_deployment_takes_one_run_at_a_time(finished_run, pipeline_project, pipeline_services):
    """Two runs submitted together: the second waits for the first's slot, both complete, nothing mixes."""
    from concurrent.futures import ThreadPoolExecutor

    with prefect_client(pipeline_services) as client:
        deployment = client.read_deployment_by_name("fluxir/full")
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy == "ENQUEUE"

    params = {"overrides": TINY_OVERRIDES}  # everything is up to date: each run is a pass over the stages
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(
            lambda _: run_deployment(pipeline_project, pipeline_services, params), (0, 1)
        )
    assert first.returncode == 0 and second.returncode == 0, first.output + second.output
    with prefect_client(pipeline_services) as client:
        runs = [client.read_flow_run(r.flow_run_id) for r in (first, second)]
        states = [{s.name for s in client.read_flow_run_states(r.id)} for r in runs]
    earlier, later = sorted(runs, key=lambda r: r.start_time)
    assert later.start_time >= earlier.end_time, "the two runs of fluxir/full overlapped"
    assert any("AwaitingConcurrencySlot" in names for names in states), states
    assert run(["git", "status", "--porcelain", "params.yaml"], pipeline_project).strip() == ""


def test_shards_ran_on_both_workers_through_s3(
    finished_run, pipeline_project, pipeline_services, monkeypatch
):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    env = pipeline_services
    with prefect_client(env) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[finished_run.flow_run_id])
            )
        )
    shard_runs = [r for r in children if r.work_pool_name == "fluxir-shards"]
    assert len(shard_runs) == 4 and all(
        r.state_name == "Completed" for r in shard_runs
    )  # 2 generate + 2 score
    workers = set()
    for r in shard_runs:
        lines = [m for m in flow_run_logs(env, str(r.id)) if "worker process" in m]
        assert len(lines) == 1, lines
        workers.add(int(lines[0].rsplit(" ", 1)[1]))
    state = pipeline_project / ".services"
    worker_pids = {json.loads((state / f"shard-worker-{i}.pid").read_text())["pid"] for i in (1, 2)}
    assert workers == worker_pids, "both workers must have taken shards"

    from fluxir.orchestration import storage

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, env[key])
    s3 = storage.filesystem(env["FLUXIR_S3_ENDPOINT_URL"])
    keys = [k for k, _ in storage.iter_objects(f"{SHARDS['shard_url']}/{finished_run.flow_run_id}", s3)]
    images = [k for k in keys if k.startswith("generate/") and k.endswith(".png")]
    assert len(images) == 8  # generate.num_images, each uploaded once by the shard that made it
    assert sum(k.startswith("score/") and k.endswith("out/manifest.parquet") for k in keys) == 2
    # Gathered into the DVC output, then the scratch space is cleared.
    manifest = pd.read_parquet(pipeline_project / "data" / "generate" / "manifest.parquet")
    assert list(manifest["index"]) == list(range(8))
    assert not (pipeline_project / ".fluxir" / "shards" / finished_run.flow_run_id).exists()


def test_benchmark_table_is_the_markdown_artifact(finished_run, pipeline_project, pipeline_services):
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with prefect_client(pipeline_services) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fluxir-benchmark"]))
        )
    mine = [a for a in artifacts if str(a.flow_run_id) == finished_run.flow_run_id]
    assert len(mine) == 1 and mine[0].type == "markdown"
    table = (pipeline_project / "reports" / "benchmark" / "table1.md").read_text()
    assert mine[0].data == table and "| DIV2K-Val |" in table


def test_mlflow_run_tree(finished_run, pipeline_project, pipeline_services):
    from mlflow import MlflowClient

    client = MlflowClient(pipeline_services["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("fluxir")
    parent = pipeline_parent_run(client, exp.experiment_id, finished_run.flow_run_id)
    head = run(["git", "rev-parse", "HEAD"], pipeline_project).strip()
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["git.sha"] == head and parent.data.tags["profile"] == "tiny"
    # The first run of a fresh project starts with no dvc.lock; each stage's run records the lock it saw.
    assert "dvc.lock.sha256" not in parent.data.tags or len(parent.data.tags["dvc.lock.sha256"]) == 64
    assert parent.data.params["train.max_steps"] == "2"  # the resolved config, overrides included
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_stage = {r.data.tags["stage"]: r for r in children}
    # build-model is skipped by DVC when the model is already built; every other stage ran.
    assert set(STAGES[1:]) <= set(by_stage) <= set(STAGES)
    for stage, child in by_stage.items():
        assert child.info.status == "FINISHED", stage
        assert child.data.tags["prefect.flow_run_id"] == finished_run.flow_run_id
        assert child.data.tags["git.sha"] == head
    assert len(by_stage["score"].data.tags["dvc.lock.sha256"]) == 64
    assert by_stage["generate"].data.metrics["summary.images"] == 8
    assert by_stage["train"].data.params["train.max_steps"] == "2"
    assert "tables" in {a.path for a in client.list_artifacts(by_stage["benchmark"].info.run_id)}
    assert "validation" in {a.path for a in client.list_artifacts(by_stage["score"].info.run_id)}


def test_validation_reports_written(finished_run, pipeline_project):
    reports = pipeline_project / "reports" / "validation"
    for stage in ("generate", "score", "filter", "degrade"):
        found = list((reports / stage).glob("*.json"))
        assert found, stage
        assert all(json.loads(p.read_text())["success"] for p in found), stage


def test_a_killed_serve_process_leaves_a_crashed_run_and_the_rerun_completes(
    finished_run, pipeline_project, pipeline_services
):
    """SIGKILL the serving process group mid-run (train running, the run's settings in params.yaml); start
    it again: the run is marked Crashed, params.yaml is the committed file, and a rerun completes."""
    import os
    import signal
    import time

    from mlflow import MlflowClient

    from fluxir.orchestration.processes import read_pid

    committed = (pipeline_project / "params.yaml").read_bytes()
    params = {"overrides": {**TINY_OVERRIDES, "train.max_steps": 40, "train.checkpoint_every": 40}}
    with prefect_client(pipeline_services) as client:
        deployment = client.read_deployment_by_name("fluxir/full")
        flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if any("Running stage 'train'" in m for m in flow_run_logs(pipeline_services, str(flow_run.id))):
            break
        time.sleep(1)
    else:
        pytest.fail("the run never reached the train stage")
    assert (pipeline_project / "params.yaml").read_bytes() != committed  # the run's settings, in place
    serve = read_pid(pipeline_project / ".services" / "prefect-serve.pid")
    os.killpg(int(serve["pid"]), signal.SIGKILL)  # the server process and the flow run under it
    time.sleep(2)
    assert (pipeline_project / "params.yaml").read_bytes() != committed  # nobody could put it back

    restart = [sys.executable, "-m", "fluxir.orchestration.services", "start", "--project", str(pipeline_project),
               "--only", "prefect-serve", "--shard-workers", "2", "--any-ports"]  # fmt: skip
    out = run(restart, pipeline_project, tool_env())
    assert (
        f"flow run {flow_run.id} was left running by an earlier serve process: marked Crashed"
        in (pipeline_project / ".services" / "prefect-serve.log").read_text()
    )
    assert (pipeline_project / "params.yaml").read_bytes() == committed, out
    with prefect_client(pipeline_services) as client:
        assert client.read_flow_run(flow_run.id).state.type.value == "CRASHED"

    rerun = run_deployment(pipeline_project, pipeline_services, params)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert (pipeline_project / "params.yaml").read_bytes() == committed
    # The killed run's MLflow parent was ended KILLED when the rerun opened its own.
    tracking = MlflowClient(pipeline_services["MLFLOW_TRACKING_URI"])
    exp = tracking.get_experiment_by_name("fluxir")
    killed = pipeline_parent_run(tracking, exp.experiment_id, str(flow_run.id))
    assert killed.info.status == "KILLED"


def test_broken_row_stops_the_chain(finished_run, pipeline_project, pipeline_services):
    """A scored manifest whose row 3 has a bad hash (committed to DVC as if it came from the remote):
    the filter stage's input gate refuses it, and nothing after it runs."""
    manifest = pipeline_project / "data" / "score" / "manifest.parquet"
    df = pd.read_parquet(manifest)
    df.loc[3, "sha256"] = "not-a-sha256"
    df.to_parquet(manifest, index=False)
    run([sys.executable, "-m", "dvc", "commit", "--force", "score"], pipeline_project, tool_env())

    failed = run_deployment(pipeline_project, pipeline_services, {"overrides": TINY_OVERRIDES, **SHARDS})

    assert failed.returncode != 0 and "Failed" in failed.output
    logs = "\n".join(flow_run_logs(pipeline_services, failed.flow_run_id))
    expected = "row 3 (id '0000003') fails expect_column_values_to_match_regex(column='sha256'"
    assert expected in logs
    assert "Running stage 'filter'" in logs and "Running stage 'degrade'" not in logs
    report = json.loads((pipeline_project / "reports" / "validation" / "filter" / "input.json").read_text())
    assert not report["success"]
    first = next(r for r in report["results"] if not r["success"])
    assert first["rows"] == [3] and first["values"] == ["not-a-sha256"]
    # A failed run leaves no override behind: a plain `dvc repro` runs the committed settings.
    assert run(["git", "status", "--porcelain", "params.yaml"], pipeline_project).strip() == ""
    print(f"failing run stopped in {failed.seconds:.1f} s")
