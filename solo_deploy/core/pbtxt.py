"""Read the protobuf text format of Triton's ``config.pbtxt`` (the subset solo-deploy writes), with
no protobuf or Triton package: the Triton client and the export's summary both read it."""
from __future__ import annotations

import re
from typing import Any

from ..errors import BadInputError

__all__ = ["parse_pbtxt"]

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)'  # comment
    r'|("(?:[^"\\]|\\.)*")'  # string
    r'|([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)'  # number
    r'|([A-Za-z_][\w.]*)'  # identifier or enum
    r'|([{}\[\]:,;]))', re.DOTALL)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\"}


def _unquote(tok: str) -> str:
    body, out, i = tok[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse_pbtxt(text: str) -> dict[str, Any]:
    """Parse the protobuf text-format subset our configs use into nested dicts.

    Scalars become str/int/float (enums stay strings); a field that repeats or is written as a
    ``[...]`` list becomes a list. Enough to read back (and test) what :func:`config_pbtxt` writes.
    """
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise BadInputError(f"config.pbtxt: cannot parse near {text[pos:pos + 30]!r}")
        pos = m.end()
        comment, string, number, ident, punct = m.groups()
        if comment:
            continue
        if string is not None:
            tokens.append(("str", _unquote(string)))
        elif number is not None:
            tokens.append(("num", float(number) if any(c in number for c in ".eE") else int(number)))
        elif ident is not None:
            tokens.append(("id", ident))
        elif punct is not None:
            tokens.append(("p", punct))
    i = 0

    def peek() -> tuple[str, Any] | None:
        return tokens[i] if i < len(tokens) else None

    def take(kind: str | None = None, value: Any = None) -> tuple[str, Any]:
        nonlocal i
        if i >= len(tokens):
            raise BadInputError("config.pbtxt: unexpected end of text")
        tok = tokens[i]
        if (kind and tok[0] != kind) or (value is not None and tok[1] != value):
            raise BadInputError(f"config.pbtxt: expected {value or kind}, got {tok[1]!r}")
        i += 1
        return tok

    def scalar() -> Any:
        kind, val = take()
        if kind in ("str", "num", "id"):
            return val
        raise BadInputError(f"config.pbtxt: unexpected {val!r}")

    def item() -> Any:
        if peek() == ("p", "{"):
            take("p", "{")
            return message("}")
        return scalar()

    def message(end: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        listed: set[str] = set()  # keys whose value is a list (repeated or bracketed)

        def add(key: str, values: list[Any], as_list: bool) -> None:
            if key in out:
                if key not in listed:
                    out[key] = [out[key]]
                    listed.add(key)
                out[key].extend(values)
            elif as_list:
                out[key] = list(values)
                listed.add(key)
            else:
                out[key] = values[0]

        while True:
            tok = peek()
            if tok is None:
                if end is not None:
                    raise BadInputError("config.pbtxt: missing closing brace")
                return out
            if end is not None and tok == ("p", end):
                take()
                return out
            if tok[0] == "p" and tok[1] in ",;":
                take()
                continue
            key = take("id")[1]
            if peek() == ("p", ":"):
                take()
            if peek() == ("p", "["):
                take()
                values: list[Any] = []
                while peek() != ("p", "]"):
                    if peek() == ("p", ","):
                        take()
                        continue
                    values.append(item())
                take("p", "]")
                add(key, values, True)
            else:
                add(key, [item()], False)

    return message(None)


# ---------------------------------------------------------------------------------------------
# Repository writer
# ---------------------------------------------------------------------------------------------
