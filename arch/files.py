"""Atomic file writes: a reader (another process, a resumed run) sees the old file or the new
one, never half of one. The one helper every writer of moenas uses; beside it the lock that
keeps one writer per output (:func:`output_lock`) and the check that a file about to be
replaced is one moenas wrote (:func:`check_replaceable`)."""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .errors import UserError
from .provenance import now_iso


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over
    ``path``. The temporary file is created with mode 0666 minus the umask (what an ordinary
    ``open`` gives), so the result has the permissions users expect; it is removed on failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


# ---- one writer per output ----------------------------------------------------------------------

LOCK_MAGIC = "moenas-lock 1\n"
_held: dict[str, int] = {}  # lock files this process holds -> nesting depth (flock is per open file)


def lock_path(output: str | Path) -> Path:
    """The lock file of an output: ``X.parquet`` -> ``X.parquet.lock``, a directory ``D`` ->
    ``D.lock`` beside it (named after the whole output, so it never meets another file).
    Symlinks are resolved, so two names of one output share one lock."""
    p = Path(os.path.realpath(output))
    return p / ".moenas.lock" if not p.name else p.with_name(p.name + ".lock")


@contextmanager
def output_lock(output: str | Path, what: str = "output") -> Iterator[Path]:
    """Hold an exclusive lock on ``output`` for the body (the whole run that writes it).

    Two runs writing one output each believe they own it and the last write wins, so rows are
    lost silently; the second run is refused instead (UserError naming the holder). ``flock``
    is released by the kernel when the holder dies, so a killed run never blocks the next and
    a lock file left on disk is harmless. Re-entrant within a process (the demo's stages).
    A file at the lock path that moenas did not write is refused, never overwritten."""
    lock = lock_path(output)
    key = str(lock)
    if key in _held:
        _held[key] += 1
        try:
            yield lock
        finally:
            _held[key] -= 1
        return
    made = _make_parents(lock.parent)
    try:
        fd = _acquire(lock, Path(output), what)
    except BaseException:
        _remove_empty(made)
        raise
    _held[key] = 1
    try:
        yield lock
    finally:
        del _held[key]
        _release(lock, fd)
        _remove_empty(made)


def _make_parents(d: Path) -> list[Path]:
    """Create ``d`` and its missing parents; returns those created (deepest first)."""
    made = []
    while not d.exists():
        made.append(d)
        d = d.parent
    for m in reversed(made):
        m.mkdir(exist_ok=True)
    return made


def _remove_empty(dirs: list[Path]) -> None:
    """Remove folders made only for the lock file and left empty (a refused run leaves nothing)."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            return  # not empty: the run wrote into it


def _acquire(lock: Path, output: Path, what: str) -> int | None:
    """Open, flock and stamp the lock file; None where the filesystem has no locks."""
    import fcntl

    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(
                f"{output}: this {what} is being written by another run ({holder}); "
                f"wait for it to finish or choose another output"
            ) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP):
                os.close(fd)
                raise
            os.close(fd)  # no locking on this filesystem: go on unprotected rather than not at all
            return None
        if _same_file(fd, lock):  # not unlinked by a holder finishing while we opened it
            break
        os.close(fd)
    try:
        _stamp(fd, lock)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _stamp(fd: int, lock: Path) -> None:
    """Write who holds the lock (read by the refused run); refuse a file that is not a lock."""
    old = os.pread(fd, len(LOCK_MAGIC), 0)
    if old and old.decode(errors="replace") != LOCK_MAGIC:
        raise UserError(f"{lock}: exists and is not a moenas lock file; move it away (moenas needs this name)")
    who = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "since": now_iso(),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (LOCK_MAGIC + json.dumps(who) + "\n").encode(), 0)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        who = json.loads(text[len(LOCK_MAGIC) :]) if text.startswith(LOCK_MAGIC) else {}
    except (OSError, ValueError):
        who = {}
    if not isinstance(who, dict) or "pid" not in who:
        return "holder unknown"
    return f"pid {who.get('pid')} on {who.get('host')}, since {who.get('since')}: {who.get('command')}"


def _release(lock: Path, fd: int | None) -> None:
    """Remove the lock file (while still holding it, so no one can take a half-dead lock), then
    let go. A run that opened the old file before the unlink sees it vanish and retries."""
    if fd is None:
        return
    try:
        if _same_file(fd, lock):
            lock.unlink()
    except OSError:
        pass  # a lock file left behind blocks no one
    finally:
        os.close(fd)


# ---- never replace a file moenas did not write -------------------------------------------------


def json_dict(path: str | Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object
    (used to recognise moenas's own files, so it never raises)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def check_replaceable(path: str | Path, is_ours: Callable[[Path], bool], what: str) -> None:
    """UserError when ``path`` exists and ``is_ours`` says moenas did not write it.

    ``--overwrite`` and ``--resume`` speak for moenas's own outputs; a user's file that happens
    to sit where a sidecar, report or export goes is never replaced, with or without them."""
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not is_ours(p):
        raise UserError(
            f"{p}: exists and is not {what}; moenas does not replace files it did not write "
            "(move it away or choose another --out)"
        )
