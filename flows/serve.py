"""Serve the deployment ``fluxir/full`` (the flow ``fluxir``) from this project: ``make services`` runs it.

    python flows/serve.py        (PREFECT_API_URL must point at a Prefect server)

Flow runs of ``fluxir/full`` start in this process's working folder, the DVC project. With
``$FLUXIR_SHARD_POOL`` set, the shard flow is also deployed as ``fluxir-shard/shard`` on that process work
pool (created if missing), so the pool's workers (``make services`` with ``FLUXIR_SHARD_WORKERS=N``) run
the generate and score shards of a ``fluxir`` run with ``shard_deployment="fluxir-shard/shard"``.

The deployment ``fluxir/full`` takes one run at a time (:data:`FULL_CONCURRENCY`: a run edits params.yaml
and the stage outputs, so a second one waits in Prefect's queue, AwaitingConcurrencySlot, until the first
ends). This process is the only one that runs it, so a run still marked RUNNING or PENDING when it starts
was lost with an earlier serve process (killed, machine lost): it is marked Crashed, which frees its
concurrency slot, and params.yaml is put back from that run's journal (:mod:`fluxir.orchestration.run_guard`).
"""

from __future__ import annotations

import os
from pathlib import Path

from fluxir_flow import fluxir, shard
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from fluxir.orchestration import run_guard

FULL_DEPLOYMENT = "full"
FULL_CONCURRENCY = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


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


def crash_orphaned_runs(flow_name: str, deployment: str) -> list[str]:
    """Mark the deployment's runs left RUNNING/PENDING by a dead serve process as Crashed; their ids."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    crashed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                )
            ),
        )
        for run in runs:
            message = (
                "its serve process ended while it ran; marked crashed when the deployment was served again"
            )
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            crashed.append(str(run.id))
    return crashed


if __name__ == "__main__":
    project = Path.cwd()
    for run_id in crash_orphaned_runs(fluxir.name, FULL_DEPLOYMENT):
        print(f"flow run {run_id} was left running by an earlier serve process: marked Crashed", flush=True)
    if run_guard.recover_params(project):
        print("params.yaml: put back from the journal of a run that did not finish", flush=True)
    if pool := os.environ.get("FLUXIR_SHARD_POOL"):
        deploy_shards(pool, project)
    fluxir.serve(
        name=FULL_DEPLOYMENT,
        global_limit=FULL_CONCURRENCY,
        description="The fluxir pipeline: generate -> ... -> benchmark, through DVC",
    )
