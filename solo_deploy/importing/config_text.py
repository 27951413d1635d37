"""The config text an mmdetection checkpoint carries (``meta["config"]``), read as data.

mmengine dumps a resolved config as Python source: assignments of literals, ``dict(...)`` calls,
lists and tuples (``model = dict(type='SOLOv2', mask_head=dict(num_grids=[40, 36, ...]))``). It
is parsed with :mod:`ast` and only those forms are evaluated; names, calls of anything but
``dict`` and every other expression become :data:`UNRESOLVED`, so nothing in the text can run.
"""
from __future__ import annotations

import ast
from typing import Any

from ..errors import BadInputError

__all__ = ["UNRESOLVED", "parse_config_text"]


class _Unresolved:
    """A value the text computes (a name, an attribute, a call): not data, so not evaluated."""

    def __repr__(self) -> str:
        return "UNRESOLVED"


UNRESOLVED = _Unresolved()
_MAX_TEXT = 2_000_000  # characters; mmdetection's dumped configs are a few tens of kB


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
        return UNRESOLVED
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_value(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _value(k) if k is not None else UNRESOLVED
            if isinstance(key, (str, int, float)):
                out[key] = _value(v)
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _value(kw.value) for kw in node.keywords if kw.arg is not None}
    return UNRESOLVED


def parse_config_text(text: str, source: str = "config") -> dict[str, Any]:
    """Top-level ``name = value`` assignments of ``text`` -> {name: value} (see the module doc).

    Raises ``BadInputError`` (one line) when ``text`` is not Python source.
    """
    if not isinstance(text, str):
        raise BadInputError(f"{source}: the config is a {type(text).__name__}, not text")
    if len(text) > _MAX_TEXT:
        raise BadInputError(f"{source}: the config text is {len(text)} characters, over {_MAX_TEXT}: not a config")
    try:
        tree = ast.parse(text)
    except (RecursionError, MemoryError):
        raise BadInputError(f"{source}: the config text nests too deeply to be a config") from None
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise BadInputError(f"{source}: the config text does not parse{where}: "
                            f"{getattr(exc, 'msg', None) or exc}") from None
    out: dict[str, Any] = {}
    try:
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                out[stmt.targets[0].id] = _value(stmt.value)
    except RecursionError:
        raise BadInputError(f"{source}: the config text nests too deeply to be a config") from None
    return out
