"""The checks a Prefect flow run's parameters pass before anything runs.

A deployment's parameters come from whoever can reach the Prefect API (it has no authentication), so
they are treated as hostile: the run may only use the project the deployment was served from, a
profile of that project, overrides from the schema's allow-list (:mod:`fluxir.config.remote`) with
values inside their declared ranges, and the one shard deployment and S3 URL shape this project uses.
Every refusal is a :class:`~fluxir.errors.UserError` raised before a file is written or a command runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fluxir.config import load_config
from fluxir.config.remote import check_remote_overrides
from fluxir.errors import UserError

PROFILES = Path("configs") / "profiles"
PROFILE_NAMES = ("tiny", "paper")
SHARD_DEPLOYMENT = "fluxir-shard/shard"
MAX_SHARDS = 1024
RUN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
S3_URL = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,62}(/[A-Za-z0-9][A-Za-z0-9_.=-]{0,127})*/?$")


def served_project(project_dir: str | None, served: Path) -> Path:
    """The project a run may use: only ``served`` (the serving process's folder), whatever is asked."""
    served = served.resolve()
    if project_dir in (None, "", "."):
        return served
    if Path(str(project_dir)).resolve() != served:
        raise UserError(
            f"project_dir={project_dir!r}: this deployment runs only the project it was served from "
            f"({served}); serve the flow from the other project instead"
        )
    return served


def check_shards(num_shards: Any, shard_deployment: Any, shard_url: Any) -> None:
    """Shard count in range, the project's own shard deployment, an ``s3://bucket/prefix`` URL."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or not 1 <= num_shards <= MAX_SHARDS:
        raise UserError(f"num_shards={num_shards!r}: must be an integer from 1 to {MAX_SHARDS}")
    if shard_deployment not in (None, "", SHARD_DEPLOYMENT):
        raise UserError(f"shard_deployment={shard_deployment!r}: must be empty or {SHARD_DEPLOYMENT!r}")
    if shard_url not in (None, "") and (
        not isinstance(shard_url, str) or not S3_URL.fullmatch(shard_url) or ".." in shard_url
    ):
        raise UserError(f"shard_url={shard_url!r}: must be s3://bucket/prefix (letters, digits, _ . = -)")


def check_run_key(run_key: Any) -> str:
    """A shard run key names a folder under the project's scratch space: a plain id, never a path."""
    if not isinstance(run_key, str) or not RUN_KEY.fullmatch(run_key) or ".." in run_key:
        raise UserError(f"run_key={run_key!r}: must be a plain id (letters, digits, _ . -), not a path")
    return run_key


def flow_settings(project: Path, profile: Any, overrides: Any) -> dict[str, Any]:
    """The profile's settings with ``overrides`` on top, checked against the schema; nothing is written."""
    if profile not in PROFILE_NAMES:
        raise UserError(f"profile={profile!r}: must be one of {', '.join(PROFILE_NAMES)}")
    from fluxir.orchestration.dvc import load_overrides

    checked = check_remote_overrides(overrides)
    settings = {**load_overrides(project / PROFILES / f"{profile}.yaml"), **checked}
    load_config(project / "params.yaml", settings)  # every value within its declared range
    return settings


def check_flow_run(
    served: Path,
    profile: Any,
    overrides: Any,
    num_shards: Any,
    shard_deployment: Any,
    shard_url: Any,
    project_dir: str | None,
) -> tuple[Path, dict[str, Any]]:
    """All the checks of a ``fluxir`` flow run: returns the project and its settings, or raises UserError."""
    project = served_project(project_dir, served)
    check_shards(num_shards, shard_deployment, shard_url)
    return project, flow_settings(project, profile, overrides)


def check_shard_run(
    served: Path, stage: Any, start: Any, count: Any, run_key: Any, overrides: Any, shard_url: Any,
    project_dir: str | None,
) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """All the checks of a ``fluxir-shard`` flow run (one generate or score range)."""
    project = served_project(project_dir, served)
    if stage not in ("generate", "score"):
        raise UserError(f"stage={stage!r}: must be generate or score")
    for name, value in (("start", start), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UserError(f"{name}={value!r}: must be a non-negative integer")
    check_run_key(run_key)
    check_shards(1, None, shard_url)
    checked = check_remote_overrides(overrides)
    load_config(project / "params.yaml", checked)
    return project, checked
