"""The two checks every hostile-input test makes: exit 2 with one line, and nothing on disk changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from moenas.cli import main


def hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (what "nothing changed" means in these tests)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refused(argv: list, capsys, root: Path, needle: str = "") -> str:
    """Run the CLI: exit 2, exactly one stderr line starting `moenas ` and holding ``needle``,
    no traceback, and no file under ``root`` created, changed or removed."""
    before = hashes(root)
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own refusals (an invalid choice) exit from parse_args
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("moenas ") and "Traceback" not in err, err
    assert needle in err, err
    assert hashes(root) == before
    return err
