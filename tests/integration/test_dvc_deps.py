"""DVC reruns exactly what a code change touches: a no-op when nothing changed, generate when models/flux.py does.

Runs on a copy of the pipeline (see pipeline_run.copy_pipeline_project) with a handful of tiny images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml
from pipeline_run import copy_pipeline_project, run

pytestmark = pytest.mark.slow


def dvc(project: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], project, timeout=600)


def test_repro_is_a_no_op_until_an_imported_module_changes(tmp_path):
    project = copy_pipeline_project(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["generate"].update(num_images=4, shard_size=2, num_inference_steps=1)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = dvc(project, "repro", "generate")
    assert "Running stage 'generate'" in first

    again = dvc(project, "repro", "generate")
    assert "Running stage" not in again, again
    assert "Stage 'generate' didn't change, skipping" in again

    flux = project / "src" / "fluxir" / "models" / "flux.py"  # imported by generate's renderer only
    flux.write_text(flux.read_text() + "\n# a change in a module generate imports\n")
    status = dvc(project, "status", "generate")
    assert "src/fluxir/models/flux.py" in status and "modified" in status, status
    rerun = dvc(project, "repro", "generate")
    assert "Running stage 'generate'" in rerun, rerun
