"""JSON received from the network, read as I-JSON (RFC 7493) with limits (RFC 8259 §9 lets a parser set them).

One reader for every JSON body and every JSON value inside a request (registration, the admin APIs, RAR
``authorization_details``, cursors), so that what reaches the store is always data it can keep:

* UTF-8 only (RFC 8259 §8.1); ``NaN``/``Infinity`` and duplicate member names are refused (RFC 7493 §2.3);
* nesting at most ``max_depth`` arrays/objects deep, checked before parsing (Python's parser recurses);
* no string, member name included, holds an unpaired surrogate (RFC 7493 §2.1: it cannot be encoded as UTF-8,
  neither by the database driver nor by our own hashing) or NUL (PostgreSQL text cannot hold it);
* integers within ±(2⁵³−1) (RFC 7493 §2.2), so any integer column can take them; non-integers become ``Decimal``
  (never ``float``, CDS §1) and must be finite with a magnitude below 10³⁰⁹, as a double's would be.

Every refusal is a :class:`JsonInputError` whose message says what was wrong and where (a JSON pointer).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from itertools import accumulate
from typing import Any, NoReturn

MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53 - 1  # RFC 7493 §2.2
_MAX_ADJUSTED_EXPONENT = 308
_FORBIDDEN_CHARACTER = re.compile("[\x00\ud800-\udfff]")
# Strings (with their escapes) removed, what is left of the structure is its brackets.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonInputError(ValueError):
    """The text is not JSON this server accepts; ``str()`` is the human reason."""


def forbidden_character(text: str) -> str | None:
    """A description of the first character no stored string may hold (NUL, an unpaired surrogate), or None."""
    found = _FORBIDDEN_CHARACTER.search(text)
    if found is None:
        return None
    char = found.group()
    return "NUL (U+0000)" if char == "\x00" else f"an unpaired surrogate (U+{ord(char):04X})"


def _reject_constant(name: str) -> NoReturn:
    raise JsonInputError(f"{name} is not a JSON number")


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonInputError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _depth(text: str) -> int:
    steps = [_DEPTH_STEP[b] for b in _BRACKET.findall(_STRING.sub("", text))]
    return max(accumulate(steps), default=0)


def _pointer(path: list[str | int]) -> str:
    """RFC 6901, for messages: where in the document the problem is."""
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in path) if path else "the top level"


def _check_values(value: Any) -> None:
    """Walk the decoded value (depth already bounded) and refuse what the store could not keep."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            problem = forbidden_character(item)
            if problem:
                raise JsonInputError(f"the string at {_pointer(path)} contains {problem}")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                raise JsonInputError(f"the integer at {_pointer(path)} is outside ±(2^53-1) (RFC 7493 §2.2)")
        elif isinstance(item, Decimal):
            if item and abs(item.adjusted()) > _MAX_ADJUSTED_EXPONENT:
                raise JsonInputError(f"the number at {_pointer(path)} is out of range (RFC 7493 §2.2)")
        elif isinstance(item, dict):
            for key, member in item.items():
                problem = forbidden_character(key)
                if problem:
                    raise JsonInputError(f"a member name at {_pointer(path)} contains {problem}")
                stack.append((member, [*path, key]))
        elif isinstance(item, list):
            stack.extend((member, [*path, index]) for index, member in enumerate(item))


def parse_json(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode untrusted JSON under the rules of the module docstring; :class:`JsonInputError` otherwise."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as error:
            raise JsonInputError(f"not UTF-8 (byte {error.start})") from None
    else:
        text = data
    if _depth(text) > max_depth:
        raise JsonInputError(f"nested deeper than {max_depth} arrays or objects")
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant,
                           object_pairs_hook=_unique_members)
    except JsonInputError:
        raise
    except (ValueError, RecursionError) as error:  # RecursionError: unreachable after the depth check, kept safe
        raise JsonInputError(str(error)) from None
    _check_values(value)
    return value
