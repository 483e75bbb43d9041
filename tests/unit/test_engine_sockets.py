"""A one-process training run opens no socket that another machine could reach."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("deepspeed")
psutil = pytest.importorskip("psutil")

PROBE = textwrap.dedent(
    """
    import json, os, psutil
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME"):
        os.environ.pop(key, None)
    from fluxir.train.engine import all_reduce_mean, init_world
    import torch
    world = init_world("deepspeed", "cpu")
    all_reduce_mean(torch.ones(2), world)
    import torch.distributed as dist
    dist.barrier()
    listening = [
        [c.laddr.ip, c.laddr.port]
        for c in psutil.Process().net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    print(json.dumps({"size": world.size, "listening": listening}))
    """
)


def test_one_process_group_listens_on_loopback_only() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["size"] == 1
    outside = [addr for addr in result["listening"] if addr[0] not in ("127.0.0.1", "::1")]
    assert outside == [], f"listening outside loopback: {outside}"
