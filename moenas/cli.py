"""The `moenas` command: one entry point, one module per subcommand under moenas/commands/.

Each command module exposes ``register(subparsers)`` (adds its parser and sets ``func``).
Bad input anywhere raises :class:`moenas.arch.UserError`; it is printed here as one line on
stderr with exit code 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from moenas.arch.errors import UserError

# Order = order in `moenas --help`. A module that fails to import (e.g. an optional extra is
# missing) drops only its own command.
COMMANDS = ["space", "export", "translate", "profile", "fit", "predict", "evaluate", "kernels", "train", "search", "demo"]


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
    except KeyboardInterrupt:
        sys.stderr.write("moenas: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
