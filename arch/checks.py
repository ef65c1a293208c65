"""Checks at the boundary: JSON text and metadata blobs read from disk, and numeric settings.

Every reader of a file a user can hand us (arch files, space YAML, profile metadata and
sidecars, ``predictor.json``, a checkpoint's metadata, an export's manifest) goes through
these, so a hostile or damaged file ends as one :class:`UserError` line instead of a
``RecursionError`` (deeply nested JSON), a ``UnicodeDecodeError`` (not UTF-8) or an
``AttributeError`` / ``KeyError`` deep inside the code that trusted the blob's shape. One
parser, one shape check and one range check, not a copy per reader.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping

from .errors import UserError

Types = type | tuple[type, ...]


def parse_json(text: str | bytes, what: str = "JSON", where: str | None = None) -> Any:
    """``json.loads`` whose every failure is ``UserError("[where: ]malformed WHAT: detail")``.

    Why not catch JSONDecodeError alone: bytes that are not UTF-8 raise UnicodeDecodeError, a
    few kB of ``[[[[`` raise RecursionError and a 5000-digit number ValueError, all of which
    used to escape as tracebacks."""
    try:
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except json.JSONDecodeError as e:
        detail = f"{e.msg} at line {e.lineno} column {e.colno}"
    except UnicodeDecodeError as e:
        detail = f"not UTF-8 ({e.reason} at byte {e.start})"
    except RecursionError:
        detail = "nested too deeply"
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        detail = str(e).split(":", 1)[0]
    raise UserError(f"{where + ': ' if where else ''}malformed {what}: {detail}")


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, or UserError naming the file (missing, a directory, not UTF-8)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_json(path: str | Path, what: str = "JSON") -> Any:
    """Parse a JSON file; UserError names the file on any failure."""
    return parse_json(read_text(path), what, where=str(path))


def _type_names(t: Types) -> str:
    return " or ".join(x.__name__ for x in (t if isinstance(t, tuple) else (t,)))


def _is(value: Any, t: Types) -> bool:
    """isinstance, except that a bool is not an int (JSON true is no count or version)."""
    ts = t if isinstance(t, tuple) else (t,)
    if isinstance(value, bool) and bool not in ts:
        return False
    return isinstance(value, ts)


def check_fields(
    blob: Any, where: str, required: Mapping[str, Types], optional: Mapping[str, Types] | None = None
) -> dict[str, Any]:
    """``blob`` unchanged when it is a dict whose ``required`` keys are present with the given
    types and whose ``optional`` keys are absent, None or of the given types; else UserError
    naming ``where`` and the first bad key. Readers then index the blob without guarding."""
    if not isinstance(blob, dict):
        raise UserError(f"{where}: must be a JSON object, got {type(blob).__name__}")
    for key, t in required.items():
        if key not in blob:
            raise UserError(f"{where}: lacks the field {key!r}")
        if not _is(blob[key], t):
            raise UserError(f"{where}: field {key!r} must be {_type_names(t)}, got {type(blob[key]).__name__}")
    for key, t in (optional or {}).items():
        if blob.get(key) is not None and not _is(blob[key], t):
            raise UserError(f"{where}: field {key!r} must be {_type_names(t)}, got {type(blob[key]).__name__}")
    return blob


def check_range(
    flag: str,
    value: float | None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """One-line UserError unless ``value`` lies in the range (``low``/``high`` excluded when
    ``*_open``; a whole number when ``integer``): every count, size and threshold a user sets
    goes through this before work.

    None passes (an unset optional setting). A non-number, NaN or an infinity never passes:
    ``--lr nan`` compares false with every bound and would otherwise slip through ``<`` tests."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{flag} must be a number, got {value!r}")
    if integer and not isinstance(value, numbers.Integral):
        raise UserError(f"{flag} must be an integer, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise UserError(f"{flag} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value >= high if high_open else value > high):
        raise UserError(f"{flag} must be {'<' if high_open else '<='} {high}, got {value}")
