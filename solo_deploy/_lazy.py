"""Declared laziness: a heavy dependency named at the top of a module and imported on first use.

``torch = lazy_import("torch")`` at module level reads like an import (readers and the
architecture test see the dependency where imports are), costs nothing until ``torch.<attr>`` is
first used, and leaves ``sys.modules`` alone until then (so "is torch loaded?" stays answerable).
``__getattr__ = lazy_exports(__name__, {"name": ".submodule"})`` gives a package the same for the
names it exports from its submodules.
"""
from __future__ import annotations

import importlib
import types
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports", "lazy_import"]


class _LazyModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str) -> Any:
        # Called only for names not yet in this stand-in: fetch from the real module and keep it,
        # so that hot paths (cv2 calls per frame) pay a plain attribute lookup afterwards.
        value = getattr(importlib.import_module(self.__dict__["_lazy_target"]), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self.__dict__['_lazy_target']!r}>"


def lazy_import(name: str) -> types.ModuleType:
    """A stand-in for module ``name`` (absolute) that imports it when an attribute is first read."""
    return _LazyModule(name)


def lazy_exports(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A package ``__getattr__`` that imports each of ``names`` (name -> relative submodule) from
    its submodule on first use."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
