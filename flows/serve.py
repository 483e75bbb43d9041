"""Serve the deployment ``fluxir/full`` (the flow ``fluxir``) from this project: ``make services`` runs it.

    python flows/serve.py        (PREFECT_API_URL must point at a Prefect server)

Flow runs of ``fluxir/full`` start in this process's working folder, the DVC project. With
``$FLUXIR_SHARD_POOL`` set, the shard flow is also deployed as ``fluxir-shard/shard`` on that process work
pool (created if missing), so the pool's workers (``make services`` with ``FLUXIR_SHARD_WORKERS=N``) run
the generate and score shards of a ``fluxir`` run with ``shard_deployment="fluxir-shard/shard"``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fluxir_flow import fluxir, shard


def deploy_shards(pool: str, project: Path) -> None:
    """Create the process work pool if needed and deploy the shard flow on it, run from ``project``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    shard.from_source(source=str(project), entrypoint="flows/fluxir_flow.py:shard").deploy(
        name="shard", work_pool_name=pool, print_next_steps=False
    )


if __name__ == "__main__":
    if pool := os.environ.get("FLUXIR_SHARD_POOL"):
        deploy_shards(pool, Path.cwd())
    fluxir.serve(name="full", description="The fluxir pipeline: generate -> ... -> benchmark, through DVC")
