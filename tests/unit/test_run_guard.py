"""One pipeline run per project, whose settings hold in params.yaml only while it runs (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fluxir.orchestration import run_guard
from fluxir.orchestration.dvc import set_params

ORIGINAL = "# the committed settings\ngenerate:\n  num_images: 8   # paper: 350000\ntrain:\n  max_steps: 10\n"

# A run in another process: takes the project, applies its settings, says so, then sleeps or kills itself.
HOLDER = """
import os, signal, sys, time
from fluxir.orchestration import run_guard
from fluxir.orchestration.dvc import set_params

def apply(path, settings):
    text = path.read_text().replace("max_steps: 10", "max_steps: 99")
    path.write_text(text)

with run_guard.pipeline_run(sys.argv[1], {}, apply):
    print("holding", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "params.yaml").write_text(ORIGINAL)
    return tmp_path


def _holder(project: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(project), mode], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "holding"
    return proc


def _apply_overrides(path: Path, settings) -> None:
    # What the flow does (DVC's comment-keeping writer); a bad key raises before the file changes.
    set_params(path, settings)


def test_the_settings_hold_while_the_run_runs_and_are_put_back_after(project: Path) -> None:
    with run_guard.pipeline_run(project, {"train.max_steps": 3}, _apply_overrides) as params:
        assert "max_steps: 3" in params.read_text()
        assert "# paper: 350000" in params.read_text()  # comments kept while it runs
    assert (project / "params.yaml").read_text() == ORIGINAL
    assert not (project / ".fluxir" / run_guard.JOURNAL_NAME).exists()


def test_a_failed_run_leaves_params_as_they_were(project: Path) -> None:
    with pytest.raises(RuntimeError, match="stage failed"):
        with run_guard.pipeline_run(project, {"train.max_steps": 3}, _apply_overrides):
            raise RuntimeError("stage failed")
    assert (project / "params.yaml").read_text() == ORIGINAL


def test_a_second_run_is_refused_and_touches_nothing(project: Path) -> None:
    holder = _holder(project, "sleep")
    try:
        during = (project / "params.yaml").read_text()
        assert "max_steps: 99" in during
        with pytest.raises(run_guard.PipelineBusyError, match=f"pid {holder.pid}") as refused:
            with run_guard.pipeline_run(project, {"train.max_steps": 3}, _apply_overrides):
                pytest.fail("a second run entered a held project")
        assert "\n" not in str(refused.value)
        assert (project / "params.yaml").read_text() == during  # the first run's settings, untouched
        assert run_guard.recover_params(project) is False  # a live run's journal is not "recovered"
        assert (project / "params.yaml").read_text() == during
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_run_is_put_back_by_the_next_start(project: Path) -> None:
    holder = _holder(project, "kill")
    assert holder.wait(timeout=30) == -signal.SIGKILL
    assert "max_steps: 99" in (project / "params.yaml").read_text()  # nobody put it back yet
    assert run_guard.recover_params(project) is True
    assert (project / "params.yaml").read_text() == ORIGINAL
    assert run_guard.recover_params(project) is False  # the journal went with the recovery


def test_a_killed_run_does_not_leak_into_the_next_run(project: Path) -> None:
    holder = _holder(project, "kill")
    holder.wait(timeout=30)
    with run_guard.pipeline_run(project, {"generate.num_images": 4}, _apply_overrides) as params:
        text = params.read_text()
        assert "num_images: 4" in text and "max_steps: 10" in text  # not the killed run's 99
    assert (project / "params.yaml").read_text() == ORIGINAL


def test_the_lock_is_released_between_runs(project: Path) -> None:
    for steps in (3, 4):
        t0 = time.monotonic()
        with run_guard.pipeline_run(project, {"train.max_steps": steps}, _apply_overrides):
            pass
        assert time.monotonic() - t0 < 5
    assert os.path.getsize(project / ".fluxir" / run_guard.LOCK_NAME) == 0  # no stale pid left behind
