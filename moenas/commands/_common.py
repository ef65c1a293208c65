"""Helpers shared by the subcommands: output formatting, input loading, and the checks every
command runs before any work (numeric flags, writable outputs)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from moenas.arch import Arch, SearchSpace, UserError, load_archs
from moenas.arch.checks import check_range, read_text
from moenas.arch.files import atomic_write_text


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain fixed-width table (no dependency; readable in any terminal or log)."""
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    sep = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join([line, sep, *body])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def _numeric(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def check_at_least(flag: str, value: float, low: float) -> None:
    """Bad-input rule for a numeric flag: one-line UserError when ``value`` < ``low``."""
    check_range(flag, value, low)


def check_writable(path: str | Path, flag: str = "--out", kind: str = "file") -> Path:
    """UserError unless ``path`` (a ``kind`` = "file" or "dir" output) can be written, checked
    before any work: otherwise a read-only or mistyped ``--out`` fails at the first save, after
    minutes of measuring or training, or as a traceback.

    The output, when it exists, must be of that kind and writable; the nearest existing
    ancestor of its parent must be a directory we may create files in (atomic writes, sidecars
    and lock files go beside the output). As root ``os.access`` grants everything, so only the
    shape checks (an ancestor that is a regular file) bite there."""
    p = Path(os.path.abspath(path))
    if p.exists():
        if kind == "dir" and not p.is_dir():
            raise UserError(f"{flag} {path}: exists and is not a directory")
        if kind == "file" and p.is_dir():
            raise UserError(f"{flag} {path}: is a directory, expected a file")
        if not os.access(p, os.W_OK | (os.X_OK if p.is_dir() else 0)):
            raise UserError(f"{flag} {path}: not writable (permission denied)")
    anc = p.parent
    while not anc.exists() and not anc.is_symlink() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise UserError(f"{flag} {path}: cannot be written, {anc} is not a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot be written, {anc} is not writable (permission denied)")
    return Path(path)


def read_lines(path: str | None) -> list[str]:
    """The lines of ``path`` (or standard input), UTF-8, one sentence or prompt per line."""
    if path is not None:
        return read_text(path).splitlines()
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text stream put in place of stdin (tests, embedding)
        return sys.stdin.read().splitlines()
    try:
        return raw.read().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"standard input: not UTF-8 text ({e.reason} at byte {e.start})") from None


def check_confidence(value: float, flag: str = "--confidence") -> None:
    """An interval confidence must lie strictly between 0 and 1."""
    if not 0 < value < 1:
        raise UserError(f"{flag} must be in (0, 1), got {value}")


def load_space(name: str) -> SearchSpace:
    return SearchSpace.load(name)


def read_archs(path: str | Path, space: SearchSpace | None = None) -> list[Arch]:
    """Archs from a JSON or JSON-lines file; validated against ``space`` when given."""
    archs = load_archs(path)
    if space is not None:
        for a in archs:
            space.validate(a)
    return archs


def write_new_file(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text``; refuse to replace an existing file unless ``overwrite``."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise UserError(f"{p} exists; pass --overwrite to replace it")
    atomic_write_text(p, text)  # a reader never sees half a file; a failed write leaves the old one
    return p


def iter_lines(archs: Iterable[Arch]) -> str:
    return "".join(a.to_json() + "\n" for a in archs)


def check_fitted_on(command: str, meta: dict, ds, where: str, allow: bool) -> list[str]:
    """A predictor (metadata ``meta``, at ``where``) against the dataset ``ds`` it meets: a
    difference in protocol, backend, thread counts or space is an error (one line),
    or with ``allow`` a warning on stderr. Returns the differences."""
    from moenas.predictor.api import fitted_on_differences, mismatch_line

    diffs = fitted_on_differences(meta, ds.fitted_on())
    if diffs:
        line = mismatch_line(where, ", ".join(ds.paths), diffs)
        if not allow:
            raise UserError(f"{line}; pass --allow-mismatch to go on anyway")
        sys.stderr.write(f"moenas {command}: warning: {line}\n")
    return diffs


PICK_LABELS = (
    ("searched", "searched"),
    ("dense", "dense"),
    ("largest_dense", "largest dense"),
    ("random", "random search"),
)


Column = tuple[str, Callable[[Any], str]]  # a picks-table column: header, Verification -> cell


def params_cell(v: Any) -> str:
    """'active / total' parameters in millions."""
    return f"{v.params_active_m if v.params_active_m is not None else float('nan'):.2f} / {v.params_m:.2f}"


def translation_columns(beam: Any) -> list[Column]:
    """A translation search's picks: BLEU / chrF, latency measured and predicted, FLOPs, params, FFN share."""
    return [
        (f"BLEU / chrF (beam {beam})", lambda v: "-" if v.bleu is None else f"{v.bleu:.1f} / {v.chrf:.1f}"),
        ("measured ms", lambda v: "-" if v.measured_ms is None else f"{v.measured_ms:.3g}"),
        (
            "predicted ms [interval]",
            lambda v: f"{v.predicted_ms:.3g} [{v.predicted_low_ms:.3g}, {v.predicted_high_ms:.3g}]",
        ),
        ("GFLOPs", lambda v: f"{v.gflops:.3g}"),
        ("params M act/total", params_cell),
        ("FFN share", lambda v: f"{100 * (v.ffn_share or 0):.0f}%"),
    ]


def picks_table(picks: dict[str, Any], winner: str | None, beam: Any, columns: Sequence[Column] | None = None) -> str:
    """The final selection's picks (``{"searched"|"dense"|"largest_dense"|"random": Verification}``)
    as a terminal table, the deployed arch marked; shared by `moenas search` and `moenas demo`.
    ``columns`` between the fitness and the verdict: a translation search's by default."""
    cols = translation_columns(beam) if columns is None else columns
    rows = []
    for key, label in PICK_LABELS:
        v = picks.get(key)
        if v is None:
            continue
        rows.append(
            [
                label + (" (deploy)" if v.arch_id == winner else ""),
                v.arch_id,
                f"{v.loss:.4f} ± {v.loss_se if v.loss_se is not None else float('nan'):.4f}",
                *(cell(v) for _, cell in cols),
                {True: "yes", False: "NO", None: "?"}[v.meets_budget],
            ]
        )
    return table(rows, ["pick", "arch", "fitness ± SE", *(h for h, _ in cols), "in budget"])
