"""Driving the DVC pipeline from an orchestrator (the Prefect flows in ``flows/``): commands, params, stages.

An orchestrator runs each stage through DVC (``dvc repro --single-item <stage>``), so the outputs are the
DVC-tracked ones and ``dvc.lock`` records them: ``dvc status`` is clean after the run, exactly as after
``dvc repro``. Overrides are written into ``params.yaml`` first, as ``dvc exp run --set-param`` does (with
DVC's own comment-preserving YAML writer), so the lock records the values the stages really used.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

TAIL_LINES = 40


class CommandError(RuntimeError):
    """A command exited non-zero; the message holds the command, its exit code and its last output lines."""

    def __init__(self, cmd: Sequence[str], returncode: int, tail: Sequence[str]) -> None:
        self.cmd, self.returncode, self.tail = list(cmd), returncode, list(tail)
        super().__init__(f"`{' '.join(cmd)}` exited with {returncode}: {error_line(tail)}")


# Most telling first: a stage's one-line user error (`fluxir <stage>: error: ...`), then the last line
# of a Python traceback, then DVC's own ERROR line.
_ERROR_PATTERNS = (
    re.compile(r"^fluxir [\w-]+: error: "),
    re.compile(r"^[\w.]*(Error|Exception)\b.*: "),
    re.compile(r"error", re.IGNORECASE),
)


def error_line(lines: Sequence[str]) -> str:
    """The line of a failed command's output that best says why it failed."""
    for pattern in _ERROR_PATTERNS:
        found = [line for line in lines if pattern.search(line)]
        if found:
            return found[-1].strip()
    return lines[-1].strip() if lines else "no output"


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment with this interpreter's folder first on PATH (``python``/``dvc`` of the venv)."""
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_command(
    cmd: Sequence[str],
    cwd: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = print,
) -> list[str]:
    """Run ``cmd`` in ``cwd``, passing each output line (stdout and stderr) to ``on_line``.

    Returns the last output lines; raises CommandError when it exits non-zero.
    """
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    proc = subprocess.Popen(
        list(cmd), cwd=cwd, env=python_env(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
    )  # fmt: skip
    assert proc.stdout is not None
    with proc:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)
    if proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, tail)
    return list(tail)


def dvc(*args: str) -> list[str]:
    """``python -m dvc <args>``: the DVC of this interpreter, wherever PATH points."""
    return [sys.executable, "-m", "dvc", *args]


def repro(
    stage: str,
    project: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = print,
) -> list[str]:
    """``dvc repro --single-item <stage>``: run the stage if its deps, params or outs changed; lock it."""
    return run_command(dvc("repro", "--single-item", stage), project, env, on_line)


def stage_definition(stage: str, project: str | os.PathLike) -> tuple[list[str], list[Path]]:
    """The commands and output paths of a dvc.yaml stage, as DVC reads them."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        (st,) = repo.stage.collect(stage)
        cmds = st.cmd if isinstance(st.cmd, list) else [st.cmd]
        return list(cmds), [Path(st.wdir) / out.def_path for out in st.outs]


def remove_outs(stage: str, project: str | os.PathLike) -> None:
    """Delete a stage's outputs, as DVC does before it runs the stage (they stay in the DVC cache)."""
    import shutil

    for path in stage_definition(stage, project)[1]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def run_and_commit(
    stage: str,
    project: str | os.PathLike,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] = print,
) -> None:
    """Run a stage's own commands here, then ``dvc commit`` it: what ``dvc repro`` does, minus deleting
    the outputs first (shards have just gathered finished work into them)."""
    cmds, _ = stage_definition(stage, project)
    for cmd in cmds:
        on_line(f"> {cmd}")
        run_command(["/bin/sh", "-c", cmd], project, env, on_line)
    run_command(dvc("commit", "--force", stage), project, env, on_line)


def stage_changed(stage: str, project: str | os.PathLike) -> bool:
    """Whether ``dvc status`` reports ``stage`` as changed (so ``repro`` would run it)."""
    done = subprocess.run(
        dvc("status", "--json", stage),
        cwd=project,
        env=python_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise CommandError(
            dvc("status", "--json", stage), done.returncode, done.stderr.splitlines()[-TAIL_LINES:]
        )
    return stage in json.loads(done.stdout or "{}")


def pipeline_clean(project: str | os.PathLike) -> tuple[bool, str]:
    """``(clean, dvc status output)`` for the whole pipeline."""
    done = subprocess.run(
        dvc("status"), cwd=project, env=python_env(), capture_output=True, text=True, check=False
    )
    text = (done.stdout + done.stderr).strip()
    return done.returncode == 0 and "up to date" in text, text


def set_params(params: str | os.PathLike, overrides: Mapping[str, Any]) -> None:
    """Write dotted ``overrides`` (``{"generate.num_images": 4}``) into the params file, keeping its comments.

    The result is validated (``fluxir.config.load_config``) before it replaces the file, so a bad key or
    value raises ConfigError and leaves the file as it was.
    """
    if not overrides:
        return
    import shutil

    from dvc.utils.serialize import modify_yaml

    from fluxir.config import ConfigError, load_config
    from fluxir.io import atomic_path

    path = Path(params)
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        with modify_yaml(tmp) as data:
            for dotted, value in overrides.items():
                *parents, leaf = dotted.split(".")
                node = data
                for part in parents:
                    if part not in node or not isinstance(node[part], dict):
                        raise ConfigError(f"{dotted}: no section {part!r} in {path}")
                    node = node[part]
                node[leaf] = value
        load_config(tmp)


def load_overrides(path: str | os.PathLike) -> dict[str, Any]:
    """A profile file: a YAML mapping of dotted keys to values (``generate.num_images: 350000``)."""
    import yaml

    from fluxir.config import ConfigError

    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: a profile is a mapping of dotted keys to values")
    return data


def set_option(key: str, value: Any) -> str:
    """``key=value`` for a stage's ``--set``, the value written as YAML (what ``parse_override`` reads)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return f"{key}={text.removesuffix('...').strip()}"
