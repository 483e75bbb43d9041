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
    # These cases test input errors: MLflow (down, see _env) is warned about, not required (its own cases
    # are at the end of this file).
    raw["tracking"]["required"] = False
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


@pytest.mark.parametrize(
    ("text", "names"),
    [
        (b"", ("params.yaml", "empty")),
        (b"degrade:\n  seed: 1\n  seed: 2\n", ("params.yaml", "seed")),  # a key written twice
        (b"train:\n  logit_mean: .nan\n", ("train.logit_mean",)),  # NaN trains on NaN losses
        (b"degrade:\n  out_dir: caf\xe9\n", ("params.yaml", "UTF-8")),  # latin-1, not UTF-8
    ],
    ids=["empty", "duplicate-key", "nan", "not-utf8"],
)
def test_a_bad_params_file_is_one_line_before_any_work(project: Path, text: bytes, names: tuple) -> None:
    (project / "params.yaml").write_bytes(text)
    _check(_run(project, "degrade"), 2, *names)
    assert not (project / "data" / "degrade").exists() and not (project / "reports").exists()


def test_a_stage_cleans_only_its_own_temp_files_in_a_users_folder(project: Path) -> None:
    """generate.out_dir pointed at a folder that holds a user's files: its cleanup touches only the
    project's own temp files (``.<name>.<random>.fluxir-tmp``), never a user's ``*.tmp``."""
    import numpy as np

    from fluxir.data.images import write_image_atomic
    from fluxir.io import TMP_SUFFIX

    photos = project / "photos"
    for k in range(2):
        write_image_atomic(photos / f"{k}.png", np.full((96, 128, 3), 60 * k, np.uint8))
    users = project / "mine"
    (users / "deep").mkdir(parents=True)
    (users / "deep" / "draft.tmp").write_text("a user's file")
    (users / "notes.tmp").write_text("a user's file")
    (users / "shard_000").mkdir()
    (users / "shard_000" / f".0000000.png.x1{TMP_SUFFIX}").write_bytes(b"half-written")  # ours, stale
    done = _run(project, "generate", "--set", "generate.source=folder", "--set", "generate.input_dir=photos",
                "--set", "generate.out_dir=mine", "--set", "generate.min_short_side=64",
                "--set", "generate.min_long_side=64", "--no-progress")  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (users / "deep" / "draft.tmp").read_text() == "a user's file"
    assert (users / "notes.tmp").read_text() == "a user's file"
    assert not list(users.rglob(f"*{TMP_SUFFIX}"))


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


def _photo(path: Path, size: tuple[int, int] = (24, 20)) -> Path:
    from PIL import Image
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).resize(size).save(path)
    return path


def _damaged_jpeg(path: Path) -> Path:
    """A real photo's JPEG with 64 bytes in the middle of its scan overwritten: Pillow decodes it garbled."""
    import io

    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=95)
    clean = buf.getvalue()
    middle = clean.index(b"\xff\xda") + (len(clean) - clean.index(b"\xff\xda")) // 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(clean[:middle] + b"\x5a" * 64 + clean[middle + 64 :])
    return path


# Each restore case is refused from names and headers before the adapter is even looked at: the adapter
# named here does not exist, so a case that got as far as loading a model would fail naming the adapter.
NO_ADAPTER = ("--adapter", "data/no-such-adapter")


@pytest.mark.parametrize("name", ["out.xyz", "out.gif", "out.txt"])
def test_restore_refuses_an_output_suffix_it_cannot_write(project: Path, name: str) -> None:
    _photo(project / "lq" / "a.png")
    line = _check(_run(project, "restore", "lq/a.png", name, *NO_ADAPTER), 2, name, "not an image type")
    assert "end OUT with .png" in line
    assert not (project / name).exists()


def test_restore_refuses_a_jpeg_damaged_mid_scan(project: Path) -> None:
    _damaged_jpeg(project / "lq" / "damaged.jpg")
    _check(
        _run(project, "restore", "lq/damaged.jpg", "out.png", *NO_ADAPTER), 2, "damaged.jpg", "damaged JPEG"
    )
    assert not (project / "out.png").exists()


def test_restore_refuses_two_inputs_with_one_output(project: Path) -> None:
    _photo(project / "lq" / "a.png")
    _photo(project / "lq" / "a.jpg")
    line = _check(_run(project, "restore", "lq", "out", *NO_ADAPTER), 2, "lq/a.jpg", "lq/a.png", "out/a.png")
    assert "rename one of them" in line
    assert not (project / "out").exists()


def test_restore_refuses_an_oversized_output_unless_forced(project: Path) -> None:
    # 1025 x 1024 at the default x4 is 4100 x 4096: just over the default 4096 x 4096 limit.
    _photo(project / "lq" / "wide.png", (1025, 1024))
    line = _check(
        _run(project, "restore", "lq/wide.png", "out.png", *NO_ADAPTER),
        2,
        "wide.png",
        "4100x4096 px",
        "restore.max_output_pixels=16777216",
        "--force",
    )
    assert "tiles of 1024 px" in line
    assert not (project / "out.png").exists()
    # --force lets it through to the next check: the adapter, which does not exist here
    _check(_run(project, "restore", "lq/wide.png", "out.png", "--force", *NO_ADAPTER), 2, "no-such-adapter")


def test_restore_exits_3_after_listing_what_a_folder_run_skipped(project: Path) -> None:
    _photo(project / "lq" / "huge.png", (1100, 1100))  # an oversized output: skipped, not an error
    (project / "lq" / "notes.txt").write_text("not an image")
    (project / "lq" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: ignored
    done = _run(project, "restore", "lq", "out", *NO_ADAPTER)  # nothing left to restore: no model needed
    assert done.returncode == 3, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "restored 0, kept 0 existing, skipped 2"
    assert lines[1].startswith("  skipped lq/huge.png: the x4 output would be 4400x4400 px")
    assert lines[2].startswith("  skipped lq/notes.txt: unsupported file type '.txt'")
    assert ": error: " not in done.stderr and "Traceback" not in done.stderr
    assert not (project / "out").exists()


# ==============================================================================================
# MLflow that does not answer, and two trainings in one folder (fluxir.tracking.policy, fluxir.train.lock)
#
# A closed port, and a server that accepts connections and never answers (MLflow's client would wait on
# it for minutes). Under a pipeline (PARENT_ENV, as _env sets it) a stage needs MLflow: with
# tracking.required (by default: MLFLOW_TRACKING_URI is set) it stops with one line, exit 1, before any
# work; without, it warns once, runs, and its report folder gets tracking.json. Either way within a bound.

MLFLOW_BOUND_S = 60


class _SilentServer:
    """Accepts TCP connections and never reads or answers them (a hung server); counts them."""

    def __init__(self) -> None:
        import socket
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                self.held.append(self.sock.accept()[0])  # kept open, never read: the client waits
            except TimeoutError:
                continue

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        for conn in [*self.held, self.sock]:
            conn.close()


@pytest.fixture
def silent_server():
    server = _SilentServer()
    yield server
    server.close()


def _mlflow_at(port: int, pipeline: bool = True) -> dict[str, str]:
    from fluxir.tracking import lineage

    env = {**_env(), "MLFLOW_TRACKING_URI": f"http://fluxir:{SECRET}@127.0.0.1:{port}"}
    if not pipeline:
        env.pop(lineage.PARENT_ENV)
    return env


def _timed(root: Path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, float]:
    import time

    t0 = time.monotonic()
    done = subprocess.run(
        [FLUXIR, *args, "--params", "params.yaml"], cwd=root, env=env, capture_output=True, text=True,
        timeout=MLFLOW_BOUND_S * 4, check=False,
    )  # fmt: skip
    return done, time.monotonic() - t0


def _image_manifest(root: Path, folder: str, count: int, side: int, step: int, row) -> pd.DataFrame:
    """``count`` flat ``side``-px images under ``data/<folder>/`` and their manifest rows; ``row(k)`` gives
    each row's own columns (source, model, seed, scores)."""
    import numpy as np

    from fluxir.data.images import write_image_atomic

    rows = []
    for k in range(count):
        path = root / "data" / folder / f"{k:07d}.png"
        sha = write_image_atomic(path, np.full((side, side, 3), step * k, np.uint8))
        rows.append(
            dict(id=f"{k:07d}", index=k, path=str(path), prompt="", width=side, height=side, sha256=sha,
                 created_at=pd.Timestamp("2025-01-01", tz="UTC")) | row(k)
        )  # fmt: skip
    df = pd.DataFrame(rows)
    df["seed"] = df["seed"].astype("Int64")
    return df


def _score_input(root: Path) -> None:
    """A small score manifest (two metrics), so that the filter stage has real work to do."""
    from fluxir.data.manifest import write_manifest

    df = _image_manifest(
        root, "score/images", 6, 8, 30,
        lambda k: dict(source="folder", model="photos", seed=None, score_sharp=0.1 * k, score_noise=float(10 - k)),
    )  # fmt: skip
    df.attrs["metrics"] = {
        "sharp": {"column": "score_sharp", "lower_better": False},
        "noise": {"column": "score_noise", "lower_better": True},
    }
    write_manifest(df, root / "data" / "score" / "manifest.parquet", kind="score")


@pytest.mark.parametrize("server", ["closed", "silent"])
def test_a_required_mlflow_that_does_not_answer_stops_the_stage_first(
    project: Path, server: str, silent_server: _SilentServer
) -> None:
    _score_input(project)
    port = silent_server.port if server == "silent" else _closed_port()
    # null: the default rule, required because MLFLOW_TRACKING_URI is set
    done, seconds = _timed(project, _mlflow_at(port), "filter", "--set", "tracking.required=null")
    line = _check(done, 1, f"MLflow at http://fluxir:***@127.0.0.1:{port} did not answer within 3 s")
    assert line.endswith("start it (make services) or set tracking.required=false")
    assert seconds < MLFLOW_BOUND_S
    assert not (project / "data" / "filter").exists()  # stopped before any work
    assert not (project / "reports" / "filter").exists()


def test_an_mlflow_not_required_is_one_warning_and_a_line_in_the_report(
    project: Path, silent_server: _SilentServer
) -> None:
    import json

    _score_input(project)
    done, seconds = _timed(project, _mlflow_at(silent_server.port), "filter")  # params: required: false
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert seconds < MLFLOW_BOUND_S
    warnings = [line for line in out.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and "stage filter runs untracked" in warnings[0], out[-3000:]
    assert SECRET not in out and "Traceback" not in out
    assert len(silent_server.held) == 1, "one probe, and no MLflow request after it"
    uri = f"http://fluxir:***@127.0.0.1:{silent_server.port}"
    assert json.loads((project / "reports" / "filter" / "tracking.json").read_text()) == {
        "stage": "filter",
        "tracked": False,
        "warnings": [f"no MLflow server answers at {uri} within 3 s"],
    }
    assert (project / "data" / "filter" / "manifest.parquet").is_file()

    # A run that tracks, or needs no MLflow (here: no pipeline above it), leaves no stale note behind.
    done, _ = _timed(project, _mlflow_at(silent_server.port, pipeline=False), "filter")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert not (project / "reports" / "filter" / "tracking.json").exists()
    assert len(silent_server.held) == 1  # nothing to track: nothing asked


def test_train_with_a_required_silent_mlflow_stops_before_loading_anything(
    project: Path, silent_server: _SilentServer
) -> None:
    done, seconds = _timed(
        project, _mlflow_at(silent_server.port), "train", "--set", "tracking.required=true"
    )
    _check(done, 1, f"127.0.0.1:{silent_server.port} did not answer", "tracking.required=false")
    assert seconds < MLFLOW_BOUND_S
    assert not (project / "data" / "train").exists()


def test_a_second_training_in_one_out_dir_is_refused_naming_the_first(project: Path) -> None:
    from fluxir.train.lock import OutDirBusy, hold_out_dir, lock_path

    with hold_out_dir(project / "data" / "train") as lock:
        assert lock == lock_path(project / "data" / "train") == project / "data" / ".train.fluxir-lock"
        with pytest.raises(OutDirBusy, match=f"pid {os.getpid()}"):  # even within one process
            with hold_out_dir(project / "data" / ".." / "data" / "train"):
                pass
        done, seconds = _timed(project, _env(), "train")
        line = _check(done, 2, "train.out_dir=data/train", f"pid {os.getpid()}", "another train.out_dir")
        assert "another training run" in line and seconds < MLFLOW_BOUND_S
    assert not (project / "data" / "train").exists()  # the lock lives beside the folder, never in it
    with hold_out_dir(project / "data" / "train"):  # released with its holder
        pass


@pytest.mark.slow
def test_train_runs_untracked_beside_a_silent_mlflow_when_not_required(
    tmp_path: Path, tiny_model_dir: Path, silent_server: _SilentServer
) -> None:
    """The review's case: `fluxir train` with an MLflow server that accepts and never answers once hung for
    over 900 s. Not required, it asks once, warns once, trains, and its report says it was not tracked."""
    import json

    from train_pairs import deepspeed_env, train_stage_args, write_pairs, write_params

    write_pairs(tmp_path, per_photo=4)  # 16 pairs: every size bucket holds a batch
    fast = {"model.max_sequence_length": 32, "restore.steps": 2, "tracking.required": False}
    write_params(
        tmp_path, tiny_model_dir, fast, engine="torch", max_steps=2, checkpoint_every=2, eval_every=2
    )
    env = {**deepspeed_env(), "MLFLOW_TRACKING_URI": f"http://fluxir:{SECRET}@127.0.0.1:{silent_server.port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fluxir.stages.train", *train_stage_args("run")], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    listening = _listening_addresses_while_running(proc)
    stdout, stderr = proc.communicate(timeout=600)
    out = stdout + stderr
    assert proc.returncode == 0, out[-3000:]
    # nothing another machine could reach (the one-process torch engine opens no store at all; the
    # DeepSpeed engine's is checked in tests/unit/test_engine_sockets.py)
    assert {host for host, _ in listening} <= {"127.0.0.1"}, listening
    assert [line for line in out.splitlines() if "MLflow" in line and "untracked" in line], out[-3000:]
    assert len([line for line in out.splitlines() if "MLflow" in line]) == 1, out[-3000:]
    assert SECRET not in out and "Traceback" not in out
    assert len(silent_server.held) == 1, "one probe, and no MLflow request after it"
    report = json.loads((tmp_path / "reports" / "run" / "tracking.json").read_text())
    assert report["tracked"] is False and report["stage"] == "train"
    assert (tmp_path / "data" / "run" / "adapter").is_dir()
    assert len((tmp_path / "reports" / "run" / "loss.csv").read_text().splitlines()) == 3


def _listening_addresses_while_running(proc: subprocess.Popen) -> set[tuple[str, int]]:
    """Every TCP address ``proc`` or its children listen on, sampled until it exits."""
    import time

    import psutil

    found: set[tuple[str, int]] = set()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for member in [root, *root.children(recursive=True)]:
                for conn in member.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN:
                        found.add((conn.laddr.ip, conn.laddr.port))
        except psutil.Error:
            pass
        time.sleep(0.05)
    return found


# ==============================================================================================
# Damaged files the user placed or copied (a model folder, a weight file, training pairs and their
# manifest): one line naming the file and what to do, never a traceback, nothing written for the run.


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("rel", ["transformer/config.json", "tokenizer_2/tokenizer.json"])
def test_a_truncated_file_of_a_local_base_model_is_named_as_damaged(
    project: Path, tiny_model_dir: Path, rel: str
) -> None:
    import shutil

    model = project / "models" / "copy"
    shutil.copytree(tiny_model_dir, model)
    _cut_in_half(model / rel)
    checked = subprocess.run(
        [FLUXIR, "models", "check", "models/copy"], cwd=project, env=_env(), capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    line = _check(checked, 2, f"models/copy/{rel}", "damaged model file", "re-download the snapshot")
    assert "Hugging Face cache" not in line
    # the same folder as model.base of a stage
    done = _run(project, "generate", "--set", "model.base=models/copy", "--no-progress")
    line = _check(done, 2, f"models/copy/{rel}", "damaged model file")
    assert "Hugging Face cache" not in line
    assert not list((project / "data" / "generate").rglob("*.png"))


def _generate_input(root: Path) -> None:
    """A small generate manifest: the score stage's input."""
    from fluxir.data.manifest import write_manifest

    df = _image_manifest(
        root, "generate/shard_000", 3, 16, 50, lambda k: dict(source="flux", model="tiny", seed=k)
    )
    write_manifest(df, root / "data" / "generate" / "manifest.parquet", kind="generate")


def test_a_garbage_pyiqa_weight_file_is_named_with_its_fix(project: Path) -> None:
    weights = project / "th" / "hub" / "pyiqa" / "musiq_koniq_ckpt-e95806b9.pth"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(os.urandom(4096))
    _generate_input(project)
    done = _run(
        project, "score", "--set", "score.metrics=[musiq]", "--set", "score.torch_home=th", "--no-progress"
    )
    _check(
        done,
        2,
        "'musiq'",
        str(weights),
        "is damaged or not a torch file",
        "delete it and place the real file",
    )
    assert not (project / "data" / "score" / "manifest.parquet").exists()


def _train(root: Path) -> subprocess.CompletedProcess:
    return _run(root, "train", "--set", "train.engine=torch", "--set", "model.device=cpu")


@pytest.mark.parametrize(
    "manifest", [b"id,hq_path,lq_path\nx,a.png,b.png\n", b"", b"PAR1 and then nothing a parquet reader wants"]
)
def test_train_refuses_a_manifest_that_is_not_parquet(project: Path, manifest: bytes) -> None:
    path = project / "data" / "degrade" / "manifest.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(manifest)
    line = _check(_train(project), 2, "data/degrade/manifest.parquet", "not a readable parquet manifest")
    assert "rerun the degrade stage" in line
    assert not (project / "data" / "train" / "adapter").exists()


@pytest.mark.parametrize(("which", "how"), [("lq", "garbage"), ("hq", "truncated")])
def test_train_stops_at_a_damaged_training_image_naming_pair_and_file(
    project: Path, tiny_model_dir: Path, which: str, how: str
) -> None:
    from train_pairs import write_pairs

    write_pairs(project, per_photo=2)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["model"]["tiny_dir"] = str(tiny_model_dir)
    raw["model"]["max_sequence_length"] = 32
    raw["train"].update({"val_size": 1, "batch_size": 1})
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    image = project / "data" / "degrade" / which / "coffee-01.png"
    if how == "garbage":
        image.write_bytes(os.urandom(2048))
    else:
        _cut_in_half(image)
    line = _check(_train(project), 2, "pair 'coffee-01'", f"data/degrade/{which}/coffee-01.png")
    assert "cannot be read as an image" in line and "rerun the degrade stage" in line
    assert not (project / "data" / "train" / "adapter").exists()
