"""SeaweedFS as `make services` starts it: only the authenticated S3 endpoint lets anyone in.

The filer's HTTP port (and the volume server's) would otherwise list, upload and delete under the DVC
bucket with no S3 keys. The test starts just the planned seaweedfs service and tries them anonymously.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fluxir.orchestration import services


def _status(url: str, data: bytes | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def seaweed(tmp_path: Path):
    try:
        svcs, env = services.plan(tmp_path, fixed_ports=False)
    except services.ServiceError as exc:
        pytest.skip(str(exc))
    svc = next(s for s in svcs if s.name == "seaweedfs")
    log = (tmp_path / "weed.log").open("w")
    proc = subprocess.Popen(
        svc.cmd, cwd=tmp_path, env={**os.environ, **svc.env}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not svc.ready(time.time()):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "weed.log").read_text()[
                -3000:
            ]
            time.sleep(0.5)
        ports = {arg.split("=")[0].lstrip("-"): arg.split("=")[1] for arg in svc.cmd if arg.startswith("-")}
        yield ports, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
        shutil.rmtree(tmp_path / ".services", ignore_errors=True)


def test_the_filer_refuses_anonymous_requests_and_s3_needs_the_keys(seaweed) -> None:
    ports, env = seaweed
    filer = f"http://{services.HOST}:{ports['filer.port']}"
    bucket = f"{filer}/buckets/{services.BUCKET}"
    assert _status(f"{bucket}/") in (401, 403)  # list
    assert _status(f"{bucket}/planted.txt", data=b"x", method="PUT") in (401, 403)  # upload
    assert _status(f"{bucket}/planted.txt", method="DELETE") in (401, 403)  # delete
    s3 = env["FLUXIR_S3_ENDPOINT_URL"]
    assert _status(f"{s3}/{services.BUCKET}/") in (401, 403)  # S3 without keys

    import s3fs

    fs = s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"], client_kwargs={"endpoint_url": s3}
    )
    fs.pipe(f"{services.BUCKET}/ok.txt", b"hello")
    assert fs.cat(f"{services.BUCKET}/ok.txt") == b"hello"
    assert _status(f"{bucket}/ok.txt") in (401, 403)  # the object exists, yet the filer will not serve it
