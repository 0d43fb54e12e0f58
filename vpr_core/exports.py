"""Lazy public names of a package: ``from vpr_core.mapdb import MapDatabase`` imports only
the module that defines it, so importing a package never loads torch, faiss or OpenCV."""
from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` resolving ``exports`` (name -> module)."""
    def resolve(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f'module {package} has no attribute {name!r}')
        return getattr(import_module(module), name)
    return resolve
