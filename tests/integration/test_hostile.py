"""Hostile and clumsy input, driven through the command line as a user (or an attacker) would.

Each case is made here, in the test, by kind (a traversing row id, a path out of the data folder, a
link out, a foreign project or a path setting given to the Prefect flow, a broken ``--set``), and each
run is checked the same way: its exit status; exactly one ``error:`` line naming the thing; no
traceback; no partial output; nothing written outside the test's own folder; and no secret (a password
in ``MLFLOW_TRACKING_URI``) in anything it printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SECRET = "hunter2-Pa55word"
FLUXIR = str(Path(sys.executable).parent / "fluxir")


def _closed_port() -> int:
    from fluxir.net import free_port

    return free_port()  # closed again: nothing listens there


def _env() -> dict[str, str]:
    from fluxir.tracking import lineage

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://fluxir:{SECRET}@127.0.0.1:{_closed_port()}"}
    env[lineage.PARENT_ENV] = "0" * 32  # as under a pipeline run: the stage tries to track, and warns
    return env


def _tree(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except those under ``skip`` (the test's own folder)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == skip:
            dirnames[:] = []
            continue
        found.update(os.path.join(dirpath, n) for n in filenames + dirnames)
    return found


def _check(done: subprocess.CompletedProcess, code: int, *names: str) -> str:
    out = done.stdout + done.stderr
    assert done.returncode == code, out[-3000:]
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 1, out[-3000:]
    assert all(name in errors[0] for name in names), errors[0]
    assert "Traceback" not in out
    assert SECRET not in out
    return errors[0]


@pytest.fixture
def project(tmp_path: Path):
    """A project folder with a params file whose stage folders live under it; the walk around it."""
    root = tmp_path / "project"
    (root / "data" / "generate").mkdir(parents=True)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tracking"]["reports_dir"] = "reports"
    raw["score"]["device"] = "cpu"
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    outside = tmp_path.parent
    before = _tree(outside, tmp_path)
    yield root
    assert _tree(outside, tmp_path) == before, "a file was written outside the test's folder"


def _manifest(root: Path, stage: str, rows: list[dict]) -> Path:
    path = root / "data" / stage / "manifest.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [FLUXIR, *args, "--params", "params.yaml"], cwd=root, env=_env(), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("bad_id", ["../../../../../x", "/abs/x", "a/b"])
def test_degrade_refuses_a_traversing_row_id(project: Path, bad_id: str) -> None:
    _manifest(project, "filter", [{"id": bad_id, "path": "../generate/a.png", "width": 128, "height": 128}])
    line = _check(_run(project, "degrade", "--no-progress"), 2, "row 0", "id")
    assert "fix or remove the row" in line
    assert not (project / "data" / "degrade").exists()


@pytest.mark.parametrize("bad_path", ["../../etc/passwd", "/etc/passwd", "link.png"])
def test_score_reads_nothing_outside_the_data_folder(project: Path, bad_path: str) -> None:
    secret_file = project.parent / "secret.png"
    secret_file.write_bytes(b"not yours")
    (project / "data" / "generate" / "link.png").symlink_to(secret_file)
    _manifest(project, "generate", [{"id": "0000000", "path": bad_path, "width": 128, "height": 128}])
    _check(_run(project, "score", "--no-progress"), 2, "row 0 path")
    assert not (project / "data" / "score").exists()


def test_a_broken_set_value_is_one_line(project: Path) -> None:
    _check(_run(project, "degrade", "--set", "degrade.seed=[1"), 2, "degrade.seed", "YAML")


FLOW_PROBE = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, "flows")
    from fluxir.errors import UserError, report
    import fluxir_flow
    try:
        fluxir_flow.fluxir.fn(**json.loads(sys.argv[1]))
    except UserError as exc:
        sys.exit(report("flow", exc))
    """
)


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"project_dir": "/tmp/attacker"}, ("project_dir", "served from")),
        ({"overrides": {"generate.out_dir": "/tmp/attacker"}}, ("generate.out_dir", "path")),
        ({"overrides": {"train.deepspeed_config": "/tmp/a.json"}}, ("train.deepspeed_config",)),
        ({"overrides": {"benchmark.datasets": []}}, ("benchmark.datasets",)),
        ({"overrides": {"generate.width": -5}}, ("generate.width",)),
        ({"shard_deployment": "other/deployment"}, ("shard_deployment",)),
    ],
)
def test_the_flow_refuses_foreign_projects_and_path_overrides(params: dict, names: tuple[str, ...]) -> None:
    pytest.importorskip("prefect")
    import json

    before = (REPO / "params.yaml").read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", FLOW_PROBE, json.dumps(params)], cwd=REPO, env=_env(), capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    _check(done, 2, *names)
    assert (REPO / "params.yaml").read_bytes() == before  # nothing was written, so nothing ran


@pytest.mark.parametrize("device", ["cuda:abc", "cudax"])
def test_an_invalid_device_is_one_line(project: Path, device: str) -> None:
    _check(_run(project, "degrade", "--set", f"score.device={device}"), 2, "score.device", "cuda:N")


def test_a_missing_gpu_is_one_line() -> None:
    import torch

    from fluxir.errors import UserError
    from fluxir.models.flux import pick_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="no CUDA GPU"):
        pick_device("cuda")


def test_an_out_dir_that_is_a_file_is_one_line(project: Path) -> None:
    (project / "data" / "afile").write_text("a user's file")
    line = _check(
        _run(project, "generate", "--no-progress", "--set", "generate.out_dir=data/afile"), 2, "data/afile"
    )
    assert "choose another path" in line
    assert (project / "data" / "afile").read_text() == "a user's file"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_dir_is_one_line(project: Path) -> None:
    locked = project / "data" / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _check(
            _run(project, "generate", "--no-progress", "--set", "generate.out_dir=data/locked/gen"),
            2,
            "locked",
        )
    finally:
        locked.chmod(0o755)
