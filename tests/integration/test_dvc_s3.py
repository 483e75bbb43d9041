"""DVC's S3 remote against a real S3 server: SeaweedFS (``weed mini``) on a free 127.0.0.1 port.

A tiny DVC project is pushed, its cache and data wiped, pulled back and compared byte for byte. The
endpoint and keys come from ``dvc remote modify --local`` (``.dvc/config.local``, git-ignored) or from the
environment (what ``.services/env`` exports), never from the committed ``.dvc/config``.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fluxir.io import TMP_SUFFIX
from fluxir.orchestration import services, storage

REPO = Path(__file__).resolve().parents[2]
S3_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory):
    """SeaweedFS started the way `make services` starts it (only that service); its client environment."""
    root = tmp_path_factory.mktemp("seaweed")
    env = services.start(root, fixed_ports=False, only=["seaweedfs"], echo=lambda _: None)
    yield env
    # SeaweedFS flushes its volume on SIGTERM; on two busy cores that has taken over 5 s (then it is killed).
    outcome = services.stop(root, timeout=30, echo=lambda _: None)
    assert outcome == {"seaweedfs": "terminated"}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in S3_VARS and not k.startswith("FLUXIR_S3")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **(extra or {})}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _dvc(cwd: Path, env: dict[str, str], *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], cwd, env)


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tiny_project(root: Path, env: dict[str, str]) -> dict[str, str]:
    """A git + DVC project with a tracked folder (binary and text files); returns their sha256."""
    _run(["git", "init", "-q"], root, env)
    _dvc(root, env, "init", "-q")
    _dvc(root, env, "config", "core.site_cache_dir", str(root / ".dvc-site"))
    data = root / "data" / "images"
    (data / "sub").mkdir(parents=True)
    rng = __import__("random").Random(7)
    (data / "a.bin").write_bytes(bytes(rng.getrandbits(8) for _ in range(200_000)))
    (data / "sub" / "b.txt").write_text("fluxir\n" * 100)
    (data / "empty.dat").write_bytes(b"")
    _dvc(root, env, "add", "-q", "data/images")
    return _digests(data)


def _round_trip(root: Path, env: dict[str, str], expected: dict[str, str]) -> str:
    out = _dvc(root, env, "push")
    assert "pushed" in out
    for path in (root / ".dvc" / "cache", root / "data" / "images"):
        subprocess.run(["rm", "-rf", str(path)], check=True)
    assert not (root / "data" / "images").exists()
    _dvc(root, env, "pull")
    assert _digests(root / "data" / "images") == expected
    return out


def test_push_pull_with_local_config(seaweed, tmp_path, monkeypatch):
    env = _env()
    expected = _tiny_project(tmp_path, env)
    bucket_path = f"s3://{services.BUCKET}/dvc-{uuid.uuid4().hex[:8]}"
    _dvc(tmp_path, env, "remote", "add", "-d", "storage", bucket_path)
    for option, variable in (
        ("endpointurl", "FLUXIR_S3_ENDPOINT_URL"),
        ("access_key_id", "AWS_ACCESS_KEY_ID"),
        ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ):
        _dvc(tmp_path, env, "remote", "modify", "--local", "storage", option, seaweed[variable])

    _round_trip(tmp_path, env, expected)

    committed = (tmp_path / ".dvc" / "config").read_text()
    assert bucket_path in committed
    assert seaweed["AWS_SECRET_ACCESS_KEY"] not in committed and "endpointurl" not in committed
    assert seaweed["AWS_SECRET_ACCESS_KEY"] in (tmp_path / ".dvc" / "config.local").read_text()
    _run(["git", "check-ignore", "-q", ".dvc/config.local"], tmp_path, env)  # exits 1 if it were tracked
    # The objects really are in SeaweedFS: 3 files, content-addressed, plus the folder's .dir listing.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, seaweed[key])
    objects = dict(storage.iter_objects(bucket_path, storage.filesystem(seaweed["FLUXIR_S3_ENDPOINT_URL"])))
    assert len(objects) == 4 and sum(objects.values()) >= 200_000 + 700


def test_push_pull_with_environment_only(seaweed, tmp_path):
    """What `source .services/env` gives: no endpoint or keys in any DVC config file."""
    expected = _tiny_project(tmp_path, _env())
    _dvc(
        tmp_path,
        _env(),
        "remote",
        "add",
        "-d",
        "storage",
        f"s3://{services.BUCKET}/env-{uuid.uuid4().hex[:8]}",
    )
    env = _env({k: seaweed[k] for k in S3_VARS})

    _round_trip(tmp_path, env, expected)

    assert not (tmp_path / ".dvc" / "config.local").exists()
    # The server really checks the keys: a fresh prefix with a wrong secret is refused.
    _dvc(
        tmp_path,
        env,
        "remote",
        "modify",
        "storage",
        "url",
        f"s3://{services.BUCKET}/other-{uuid.uuid4().hex[:8]}",
    )
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with pytest.raises(AssertionError, match="SignatureDoesNotMatch|InvalidAccessKeyId|AccessDenied|403"):
        _dvc(tmp_path, wrong, "push")


def test_repository_remote_holds_no_endpoint_or_secret():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".dvc" / "config")
    remote = cfg["'remote \"storage\"'"]
    assert remote["url"].startswith("s3://") and cfg["core"]["remote"] == "storage"
    # endpoint and keys belong in .dvc/config.local or the environment; timeouts keep a dead server from
    # hanging a push (the same as fluxir's own S3 client)
    assert set(remote) == {"url", "connect_timeout", "read_timeout"}
    assert float(remote["connect_timeout"]) == storage.CONNECT_TIMEOUT_SECONDS
    assert float(remote["read_timeout"]) == storage.READ_TIMEOUT_SECONDS


def test_storage_round_trip(seaweed, tmp_path, monkeypatch):
    """fluxir.orchestration.storage (s3fs), used by shards on other machines: upload a folder, download it elsewhere."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FLUXIR_S3_ENDPOINT_URL"):
        monkeypatch.setenv(key, seaweed[key])
    s3 = storage.filesystem()  # endpoint from $FLUXIR_S3_ENDPOINT_URL
    src = tmp_path / "src"
    (src / "shard_000").mkdir(parents=True)
    (src / "shard_000" / "0000000.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 40)
    (src / "run.json").write_text('{"seed": 0}\n')
    (src / "shard_000" / f".0000001.png.abc{TMP_SUFFIX}").write_bytes(b"half-written")  # never sent
    url = f"s3://{services.BUCKET}/storage-{uuid.uuid4().hex[:8]}"
    storage.ensure_bucket(url, s3)

    assert storage.upload_dir(src, url, s3) == ["run.json", "shard_000/0000000.png"]
    assert storage.upload_dir(src, url, s3) == []  # same sizes already there: nothing re-sent
    dst = tmp_path / "dst"
    assert sorted(storage.download_prefix(url, dst, s3)) == ["run.json", "shard_000/0000000.png"]
    assert _digests(dst) == {k: v for k, v in _digests(src).items() if not k.endswith(TMP_SUFFIX)}
    assert storage.download_prefix(url, dst, s3) == []
    assert not list(dst.rglob(".*")) and not list(dst.rglob("*.part")), "no temp file of a download is left"


class _Listing:
    """Just enough of an s3fs file system to list given keys."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys

    def find(self, path: str, detail: bool = False):
        return {f"{path}/{k}": {"name": f"{path}/{k}", "size": 1, "type": "file"} for k in self.keys}


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/abs"])
def test_download_refuses_keys_that_escape(tmp_path, key):
    with pytest.raises(storage.StorageError, match="escapes the target folder"):
        storage.download_prefix("s3://b/p", tmp_path, _Listing([key]))
    assert list(tmp_path.iterdir()) == []


def test_parse_url():
    assert storage.parse_url("s3://b/a/b/") == storage.S3Url("b", "a/b")
    assert str(storage.parse_url("s3://b").child("x", "y/")) == "s3://b/x/y"
    with pytest.raises(storage.StorageError, match="not an S3 URL"):
        storage.parse_url("/tmp/x")


def test_a_push_cut_by_a_server_kill_completes_after_a_restart(tmp_path):
    """SIGKILL SeaweedFS mid-``fluxir push``: the push stops with one line in bounded time (plain DVC retries
    every remaining object for hours); after a restart (same port) a second push completes, and a pull into
    a wiped cache gives every file back byte for byte."""
    import signal
    import time

    from fluxir.orchestration.processes import read_pid

    svc_root = tmp_path / "services"
    first = services.start(svc_root, fixed_ports=False, only=["seaweedfs"], echo=lambda _: None)
    try:
        project = tmp_path / "project"
        project.mkdir()
        env = _env()
        _run(["git", "init", "-q"], project, env)
        _dvc(project, env, "init", "-q")
        _dvc(project, env, "config", "core.site_cache_dir", str(project / ".dvc-site"))
        data = project / "data" / "many"
        data.mkdir(parents=True)
        for i in range(1500):  # many objects: the push takes long enough to be cut
            (data / f"{i:04d}.bin").write_bytes(os.urandom(8_000))
        _dvc(project, env, "add", "-q", "data/many")
        expected = _digests(data)
        url = f"s3://{services.BUCKET}/fault-{uuid.uuid4().hex[:8]}"
        _dvc(project, env, "remote", "add", "-d", "storage", url)
        committed = configparser.ConfigParser()
        committed.read(REPO / ".dvc" / "config")
        for option in ("connect_timeout", "read_timeout"):  # the repository's own remote settings
            value = committed["'remote \"storage\"'"][option]
            _dvc(project, env, "remote", "modify", "storage", option, value)
        client = _env({k: first[k] for k in S3_VARS} | {"DVC_NO_ANALYTICS": "1"})
        fluxir = [str(Path(sys.executable).parent / "fluxir"), "push", "-j", "1", "--give-up", "5"]

        log = tmp_path / "push.log"
        with log.open("w") as out:
            push = subprocess.Popen(fluxir, cwd=project, env=client, stdout=out, stderr=subprocess.STDOUT)
        s3 = storage.filesystem(first["FLUXIR_S3_ENDPOINT_URL"])
        os.environ.update({k: first[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        deadline = time.monotonic() + 120
        while push.poll() is None and time.monotonic() < deadline:
            try:
                if sum(1 for _ in storage.iter_objects(url, s3)) >= 20:
                    break
            except (OSError, storage.StorageError):
                pass
            time.sleep(0.05)
        assert push.poll() is None, "the push ended before the server could be killed"
        weed = read_pid(svc_root / services.STATE_DIR / "seaweedfs.pid")
        os.killpg(int(weed["pid"]), signal.SIGKILL)
        t0 = time.monotonic()
        push.wait(timeout=120)
        cut_seconds = time.monotonic() - t0
        output = log.read_text()
        assert push.returncode == 1, output[-2000:]
        errors = [line for line in output.splitlines() if line.startswith("fluxir push: error: ")]
        assert len(errors) == 1 and "stopped answering for 5 s" in errors[0], output[-2000:]
        assert "Traceback" not in output and first["AWS_SECRET_ACCESS_KEY"] not in output

        again = services.start(svc_root, fixed_ports=False, only=["seaweedfs"], echo=lambda _: None)
        assert again["FLUXIR_S3_ENDPOINT_URL"] == first["FLUXIR_S3_ENDPOINT_URL"]  # the port was reused
        _run(fluxir[:2], project, client)
        for path in (project / ".dvc" / "cache", data):
            subprocess.run(["rm", "-rf", str(path)], check=True)
        _run([*fluxir[:1], "pull"], project, client)
        assert _digests(data) == expected
        print(
            f"push stopped {cut_seconds:.1f} s after the server was killed; the rerun and a pull are intact"
        )
    finally:
        services.stop(svc_root, timeout=5, echo=lambda _: None)
