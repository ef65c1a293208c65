"""Build the shipped demo corpus once, from a machine's German gettext catalogs.

    python -m moenas.data.build_corpus --locale-dir /usr/share/locale/de/LC_MESSAGES

writes ``data/corpora/gettext-en-de.tsv.xz`` (the pairs :func:`corpus.load_gettext_corpus`
gives, with its splits), ``gettext-en-de.json`` (SHA-256, counts, fingerprint, source packages)
and ``NOTICE``: every source Debian package, its version and licences. The translations are
distributed under those packages' licences (mostly GPL/LGPL), not the project's. Needs ``dpkg``
to name the packages; the demo itself only reads the result (:func:`corpus.load_shipped_corpus`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from .corpus import CLEANING_VERSION, CORPORA_DIR, NAME, SPLITS, gettext_catalogs, load_gettext_corpus


def build(locale_dir: str | Path, out_dir: Path = CORPORA_DIR, name: str = NAME) -> dict[str, Any]:
    """Write ``NAME.tsv.xz``, ``NAME.json`` and ``NOTICE`` from the catalogs in ``locale_dir``."""
    corpus = load_gettext_corpus(locale_dir)
    lines = [f"{split}\t{s}\t{t}" for split in SPLITS for s, t in getattr(corpus, split)]
    blob = lzma.compress(("\n".join(lines) + "\n").encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    packages = source_packages(gettext_catalogs(locale_dir))
    manifest = {
        "file": f"{name}.tsv.xz",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "pairs": {s: len(getattr(corpus, s)) for s in SPLITS},
        "cleaning": CLEANING_VERSION,
        "built_from": {
            "locale_dir": str(locale_dir),
            "catalogs": corpus.info["files"],
            "gettext_fingerprint": corpus.fingerprint,
        },
        "packages": packages,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.tsv.xz").write_bytes(blob)
    (out_dir / f"{name}.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out_dir / "NOTICE").write_text(notice(manifest), encoding="utf-8")
    return manifest


def source_packages(catalogs: list[Path]) -> list[dict[str, Any]]:
    """Per Debian package owning any of ``catalogs``: name, version, licences, catalog names."""
    owner: dict[str, list[str]] = {}
    for mo in catalogs:
        out = subprocess.run(["dpkg", "-S", str(mo)], capture_output=True, text=True).stdout
        pkg = out.split(":", 1)[0].strip() if out else "unknown"
        owner.setdefault(pkg, []).append(mo.name)
    rows = []
    for pkg, files in sorted(owner.items()):
        version = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True
        ).stdout.strip()
        rows.append(
            {"package": pkg, "version": version or "unknown", "licenses": licenses(pkg), "catalogs": sorted(files)}
        )
    return rows


def licenses(pkg: str) -> list[str]:
    """The licence names a Debian package's copyright file declares (DEP-5 ``License:`` fields;
    otherwise the GNU licences it names), or ["see /usr/share/doc/PKG/copyright"]."""
    path = Path("/usr/share/doc") / pkg.split(":")[0] / "copyright"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return [f"see the {pkg} package's copyright file"]
    names = [m.strip() for m in re.findall(r"^License:\s*(.+)$", text, flags=re.M)]
    names = [n for n in names if len(n.split()) <= 8 and not n.startswith("*") and not n.endswith((":", ",", "."))]
    if not names:
        names = sorted(
            set(
                re.findall(
                    r"\b(?:GNU (?:Lesser |Library )?General Public License|GPL|LGPL)(?:-?v?\d(?:\.\d)?\+?)?", text
                )
            )
        )
    return sorted(dict.fromkeys(names)) or [f"see {path}"]


def notice(manifest: dict[str, Any]) -> str:
    """The NOTICE text: what the file is, and every source package with its version and licences."""
    pkgs = manifest["packages"]
    lines = [
        f"data/corpora/{manifest['file']}: English-German message pairs extracted from the German gettext",
        f"translation catalogs of {len(pkgs)} Debian packages ({manifest['built_from']['catalogs']} catalogs),",
        "cleaned and split by moenas (data/corpus.py, data/build_corpus.py).",
        "",
        "This file is NOT distributed under the moenas licence (Apache-2.0). Each pair is part of the",
        "translation catalog of the package named below and is distributed under that package's",
        "licence(s), as declared in its Debian copyright file. Most are GPL or LGPL.",
        "",
        "package | version | licence(s) | catalogs",
    ]
    lines += [
        f"{p['package']} | {p['version']} | {'; '.join(p['licenses'])} | {', '.join(p['catalogs'])}" for p in pkgs
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Rebuild the shipped demo corpus from a machine's German gettext catalogs."
    )
    ap.add_argument("--locale-dir", default="/usr/share/locale/de/LC_MESSAGES")
    ap.add_argument("--out-dir", type=Path, default=CORPORA_DIR)
    args = ap.parse_args(argv)
    m = build(args.locale_dir, args.out_dir)
    print(
        f"{m['file']}: {m['pairs']} pairs from {len(m['packages'])} packages, {m['bytes']} bytes, sha256 {m['sha256'][:12]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
