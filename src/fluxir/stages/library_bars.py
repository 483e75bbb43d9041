"""Switch off the loading bars of diffusers, transformers and huggingface_hub without importing them.

A stage shows its own tqdm bar; the libraries' bars (downloads, "Loading pipeline components") would
interleave with it. Importing the libraries to call their switches cost 5 s and 800 MiB (torch comes
with them) in stages that never load a model (filter, degrade), so each switch runs when its library
is imported: at once if it already is, otherwise right after its first import, through a finder on
``sys.meta_path`` that wraps the module's loader.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

Hook = Callable[[ModuleType], None]

# module -> how to switch its bars off (each library's own switch; transformers' also covers the hub's)
SWITCHES: dict[str, Hook] = {
    "huggingface_hub.utils.tqdm": lambda m: m.disable_progress_bars(),
    "transformers.utils.logging": lambda m: m.disable_progress_bar(),
    "diffusers.utils.logging": lambda m: m.disable_progress_bar(),
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``hooks[name](module)`` right after ``name`` is first executed; finds nothing itself."""

    def __init__(self, hooks: dict[str, Hook]) -> None:
        self.hooks = hooks

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        hook = self.hooks.pop(fullname, None)
        if hook is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        exec_module = spec.loader.exec_module

        def exec_then_hook(module: ModuleType) -> None:
            exec_module(module)
            hook(module)

        spec.loader.exec_module = exec_then_hook  # type: ignore[method-assign]  # this spec's own loader
        return spec


_FINDER = _AfterImport({})


def disable_library_bars(switches: dict[str, Hook] | None = None) -> None:
    """Switch each library's bars off now if it is imported, else when it is (idempotent)."""
    for name, hook in (SWITCHES if switches is None else switches).items():
        module = sys.modules.get(name)
        if module is not None:
            hook(module)
        else:
            _FINDER.hooks[name] = hook
    if _FINDER.hooks and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
