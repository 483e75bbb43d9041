"""DVC outputs are a pure function of code, params and inputs; the committed dvc.lock matches the code.

1. The cheap stages (build-model -> generate -> score -> filter -> degrade) on a handful of tiny images,
   run by ``dvc repro`` in two copies of the pipeline at different paths: every output file and every
   report is byte-identical between the two runs, and so are the two dvc.lock files. A timestamp, a
   timing, a run-history count or an absolute path in any output fails this.
2. A fresh clone (the files git tracks, nothing else) is up to date except for data DVC has to fetch or
   rebuild: ``dvc status`` reports no changed command, dependency or parameter, and no output other than
   missing (``deleted``) ones. It fails whenever code a stage depends on changes after dvc.lock was
   written, until ``dvc repro`` (``make demo``) is run and dvc.lock committed again.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pipeline_run import REPO, copy_pipeline_project, run, tool_env

from fluxir.data.manifest import read_manifest

pytestmark = pytest.mark.slow

MISSING = ("deleted", "not in cache")
"""What ``dvc status`` says of data a fresh clone does not have yet (outs under data/, deps on them)."""
CHEAP_STAGES = ("build-model", "generate", "score", "filter", "degrade")
# A handful of tiny images: enough that the filter drops some and degrade crops several sizes.
SMALL = {"generate": {"num_images": 4, "shard_size": 2, "num_inference_steps": 1, "batch_size": 2}}


def dvc(project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return run([sys.executable, "-m", "dvc", *args], project, env=env, timeout=900)


def stage_outputs(project: Path) -> list[Path]:
    """Every file under the cheap stages' outs and metrics in dvc.yaml (relative to the project)."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    files: list[Path] = []
    for name in CHEAP_STAGES:
        for entry in [*stages[name].get("outs", []), *stages[name].get("metrics", [])]:
            path = project / (entry if isinstance(entry, str) else next(iter(entry)))
            assert path.exists(), f"stage {name}: output {path.relative_to(project)} was not written"
            found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            files += [p.relative_to(project) for p in found]
    return files


def digests(project: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256((project / p).read_bytes()).hexdigest() for p in stage_outputs(project)}


def small_project(root: Path) -> Path:
    project = copy_pipeline_project(root)
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def _differing(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def test_two_runs_of_the_cheap_stages_write_the_same_bytes(tmp_path):
    env = tool_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}"})
    # Both copies first, from the same files; the second at another path: nothing may name the folder.
    first_copy = small_project(tmp_path / "a" / "project")
    other_copy = small_project(tmp_path / "b" / "elsewhere")
    runs = []
    for project in (first_copy, other_copy):
        dvc(project, "repro", "degrade", env=env)
        runs.append(digests(project))
    first, second = runs
    assert any(k.startswith("data/degrade/") for k in first) and any(k.startswith("reports/") for k in first)
    assert not _differing(first, second), f"the second run wrote other bytes: {_differing(first, second)}"
    # Same code, params and outputs: the same dvc.lock, so a fresh clone's `dvc repro` leaves it unchanged.
    assert (other_copy / "dvc.lock").read_text() == (first_copy / "dvc.lock").read_text()


def _fresh_clone(target: Path) -> Path:
    """The repository as a clone has it: the files git tracks, as they are in the working tree."""
    listed = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the working tree is not in the clone either
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / name)
    run(["git", "init", "-q"], target)
    return target


def test_the_committed_dvc_lock_matches_the_code(tmp_path):
    clone = _fresh_clone(tmp_path / "clone")
    env = tool_env({"DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site"), "DVC_NO_ANALYTICS": "1"})
    # every pipeline that has a committed lock file (a profile pipeline never run here has none: it is
    # not stale, it has simply not been run)
    pipelines = [
        str(p.relative_to(clone)) for p in sorted(clone.rglob("dvc.yaml")) if p.with_suffix(".lock").is_file()
    ]
    assert "dvc.yaml" in pipelines
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *pipelines], cwd=clone, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    status = json.loads(done.stdout or "{}")
    stale: list[str] = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):  # "always changed", "changed command"
                stale.append(f"{stage}: {change}")
                continue
            for kind, entries in change.items():
                if kind in ("changed outs", "changed deps"):
                    # data DVC fetches or rebuilds is missing on a fresh clone; anything else is stale
                    stale += [f"{stage}: {kind} {p} {s}" for p, s in entries.items() if s not in MISSING]
                else:  # changed params, changed command, ...
                    stale.append(f"{stage}: {kind} {entries}")
    assert not stale, (
        "dvc.lock does not match the code and params (run `make demo`, i.e. `dvc repro`, and commit "
        "dvc.lock and reports/):\n" + "\n".join(stale)
    )


def test_dvc_repro_resumes_generate_after_a_sigkill(tmp_path):
    """``persist: true``: DVC keeps a killed run's images, and the rerun makes only the missing ones."""
    import os
    import signal
    import time

    env = tool_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlruns.db'}", "OMP_NUM_THREADS": "1"})
    project = small_project(tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["generate"].update(num_images=40, shard_size=2, batch_size=2, num_inference_steps=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(project, "repro", "build-model", env=env)

    out = project / "data" / "generate"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "generate"], cwd=project, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while len(list(out.glob("shard_*/*.png"))) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage under it, mid-run
    proc.wait()
    made = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard_*/*.png")}
    assert 6 <= len(made) < 40, f"{len(made)} images before the kill: the run was not interrupted mid-way"
    assert not (out / "manifest.parquet").exists()  # the killed run never finished

    log = dvc(project, "repro", "generate", env=env)
    resumed = int(re.search(r"made_now (\d+)", log).group(1))
    assert resumed <= 40 - len(made) + 2, log[-2000:]  # at most the torn batch is made again
    kept = [p for p, stamp in made.items() if p.exists() and (p.stat().st_ino, p.stat().st_mtime_ns) == stamp]
    assert len(kept) >= len(made) - 2, "the rerun rewrote images the killed run had finished"
    assert len(read_manifest(out / "manifest.parquet")) == 40
    assert "Data and pipelines are up to date" in dvc(project, "status", "generate", env=env)
