"""The MLflow UI of a finished pipeline run, opened in headless Chromium (the run: conftest.py).

The UI is a JavaScript app, so the page is rendered with a virtual-time budget and its DOM read back:
the runs list must show the pipeline's parent run, and the benchmark child's table artifact must show
the numbers of the benchmark report. Screenshots go to reports/mlflow-ui/.
"""

from __future__ import annotations

import csv
import io

import pytest
from headless import dump_dom, screenshot, text_of
from pipeline_run import REPO, pipeline_parent_run

pytestmark = pytest.mark.slow
SHOTS = REPO / "reports" / "mlflow-ui"


@pytest.fixture(scope="module")
def runs(finished_run, pipeline_services):
    from mlflow import MlflowClient

    client = MlflowClient(pipeline_services["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("fluxir")
    parent = pipeline_parent_run(client, exp.experiment_id, finished_run.flow_run_id)
    children = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return exp.experiment_id, parent, {r.data.tags["stage"]: r for r in children}


def test_runs_list_shows_the_pipeline_run(runs, pipeline_services):
    experiment_id, parent, _ = runs
    url = f"{pipeline_services['MLFLOW_TRACKING_URI']}/#/experiments/{experiment_id}/runs"
    text = text_of(dump_dom(url))
    assert parent.info.run_name in text, text[:2000]
    screenshot(url, SHOTS / "runs.png")


def test_parent_run_page_shows_its_children_and_tags(runs, pipeline_services):
    experiment_id, parent, children = runs
    url = (
        f"{pipeline_services['MLFLOW_TRACKING_URI']}/#/experiments/{experiment_id}/runs/{parent.info.run_id}"
    )
    text = text_of(dump_dom(url))
    assert parent.info.run_name in text
    assert parent.data.tags["prefect.flow_run_id"] in text, "the Prefect flow-run id tag is shown"


def test_benchmark_table_renders(runs, pipeline_services, pipeline_project):
    experiment_id, _, children = runs
    bench = children["benchmark"].info.run_id
    url = (
        f"{pipeline_services['MLFLOW_TRACKING_URI']}/#/experiments/{experiment_id}/runs/{bench}"
        "/artifacts/tables/table1.json"
    )
    text = text_of(dump_dom(url))
    rows = list(
        csv.DictReader(io.StringIO((pipeline_project / "reports" / "benchmark" / "table1.csv").read_text()))
    )
    assert rows and "DIV2K-Val" in text
    for method in ("bicubic", "lanczos", "fluxir"):
        assert method in text
    psnr = next(r for r in rows if r.get("metric", "").lower() == "psnr")
    assert psnr["bicubic"][:6] in text, f"PSNR of bicubic {psnr['bicubic']} not in the rendered table"
    shot = screenshot(url, SHOTS / "benchmark-table.png", size="2400,900")
    assert shot.stat().st_size > 10_000
