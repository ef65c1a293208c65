"""The `moenas` command: one entry point, one module per subcommand under moenas/commands/.

Each command module exposes ``register(subparsers)`` (adds its parser and sets ``func``).
Bad input anywhere raises :class:`moenas.arch.UserError`; it is printed here as one line on
stderr with exit code 2, and so is an ``OSError`` (``PATH: reason``: a read-only folder, a full
disk). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from moenas.arch.errors import UserError

# Order = order in `moenas --help`. A listed module that does not exist is skipped; one whose own
# imports fail (a missing dependency) raises, so a broken install is never a silently missing command.
COMMANDS = [
    "space",
    "export",
    "translate",
    "generate",
    "profile",
    "fit",
    "calibrate",
    "predict",
    "evaluate",
    "kernels",
    "train",
    "search",
    "demo",
]


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad flags already; keep its message to one line."""

    def error(self, message: str) -> None:  # noqa: D401
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="moenas", description="Find fast sparse (MoE) Transformers for a given machine.")
    parser.add_argument("--version", action="version", version=f"moenas {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"moenas.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("moenas.commands"):
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("moenas")
    except PackageNotFoundError:
        return "unknown"


def os_error_line(e: OSError) -> str:
    """``PATH: reason`` of an OSError (``PATH -> PATH2: reason`` for a rename), on one line.

    Not bad input in the UserError sense, and not a bug either: the user can fix it, so it gets
    a line, not a traceback."""
    reason = e.strerror or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    if e.filename is None:
        return reason
    where = f"{e.filename} -> {e.filename2}" if e.filename2 is not None else str(e.filename)
    return f"{where}: {reason}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        sys.stderr.write(f"moenas {args.command}: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}\n")
        return 2
    except BrokenPipeError:  # `moenas space sample | head -1`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's exit flush is silent too (Python docs' recipe)
        return 0
    except OSError as e:  # the machine said no (a read-only folder, a full disk, a path through a file)
        sys.stderr.write(f"moenas {args.command}: error: {os_error_line(e)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("moenas: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
