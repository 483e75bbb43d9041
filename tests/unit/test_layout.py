"""Where things live: layers checked by import-linter, and dvc.yaml deps that cover what each stage imports.

DVC reruns a stage only when one of its ``deps`` changes. A stage whose deps miss a module it imports
would keep a stale output after that module changed, so each stage's import closure (inside
src/fluxir, found by reading the source, function-level imports included) must be covered by its deps.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
STAGE_CMD = re.compile(r"python -m (fluxir(?:\.\w+)+)")


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` under src/, or None when it is not one of ours."""
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, package: str) -> set[str]:
    """Every fluxir module ``path`` imports, at any nesting level (``from a import b`` may name a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the importing package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] == "fluxir" and module_file(name)}


def import_closure(module: str) -> set[Path]:
    """Source files loaded by ``import module``: the module, what it imports, and every parent package."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
        path = module_file(name)
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        todo.extend(imported_modules(path, package) - seen)
    return {module_file(name).relative_to(REPO) for name in seen}


PIPELINES = ("dvc.yaml", "mini/dvc.yaml")  # the root pipeline and the mini profile's


def dvc_stages(pipeline: str = "dvc.yaml") -> dict[str, dict]:
    return yaml.safe_load((REPO / pipeline).read_text())["stages"]


def dep_paths(stage: dict) -> list[Path]:
    return [Path(next(iter(d)) if isinstance(d, dict) else d) for d in stage.get("deps", [])]


def covered(path: Path, deps: list[Path]) -> bool:
    return any(path == dep or dep in path.parents for dep in deps)


def test_import_closure_finds_function_level_and_parent_package_imports():
    closure = import_closure("fluxir.stages.generate")
    assert Path("src/fluxir/__init__.py") in closure
    assert Path("src/fluxir/stages/__init__.py") in closure
    assert Path("src/fluxir/config/schema.py") in closure or Path("src/fluxir/config/__init__.py") in closure
    # fluxir.models.flux is imported inside functions of generate's renderers, never at module level
    assert Path("src/fluxir/models/flux.py") in closure


@pytest.mark.parametrize(
    ("pipeline", "name"),
    [(pipeline, name) for pipeline in PIPELINES for name in sorted(dvc_stages(pipeline))],
)
def test_dvc_deps_cover_every_module_the_stage_imports(pipeline, name):
    stage = dvc_stages(pipeline)[name]
    match = STAGE_CMD.search(stage["cmd"])
    assert match, f"stage {name}: cmd {stage['cmd']!r} does not run `python -m fluxir...`"
    deps = dep_paths(stage)
    missing = sorted(str(p) for p in import_closure(match.group(1)) if not covered(p, deps))
    assert not missing, f"{pipeline} stage {name!r} imports modules its deps do not list: {missing}"


def test_the_closure_check_catches_a_missing_dep():
    """The check is not vacuous: dropping one dep of a stage leaves a module uncovered."""
    stage = dvc_stages()["generate"]
    deps = [d for d in dep_paths(stage) if "models" not in str(d)]
    closure = import_closure("fluxir.stages.generate")
    assert [p for p in closure if not covered(p, deps)]


def test_import_linter_layers_hold():
    """`make lint` runs the same check; here it also runs under plain pytest."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed in this venv (make setup installs it)")
    done = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
