"""Imports flow one way (docs/ARCHITECTURE.md): a package may import only the floors below it."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder -> the moenas subpackages it may import
ALLOWED = {
    "moe_kernels": set(),
    "arch": {"moe_kernels"},
    "data": {"arch"},
    "profiler": {"arch", "data", "moe_kernels"},
    "predictor": {"arch", "data"},
    "search": {"arch", "data", "predictor", "profiler", "moe_kernels"},
}
TOP = "moenas"  # the top floor: the CLI and the re-exports of `moenas/__init__.py`
SUBPACKAGES = set(ALLOWED) | {"commands"}


def _absolute(node: ast.ImportFrom, module: str) -> str:
    """``node``'s module as an absolute name, for a file that is module ``module``."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".")[:-node.level]
    return ".".join(package + ([node.module] if node.module else []))


def imported_floors(source: str, module: str) -> set[str]:
    """The floors a file imports: the ``moenas.X`` subpackages it names (``import moenas.X``,
    ``from moenas.X import``, ``from moenas import X``, relative imports that reach them),
    and ``moenas`` itself for a name taken from the top package (``from moenas import name``)."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            names = [f"{base}.{a.name}" if base == TOP else base for a in node.names]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] != TOP or len(parts) == 1:
                continue
            out.add(parts[1] if parts[1] in SUBPACKAGES else TOP)
    return out


def module_name(root: Path, folder: str, path: Path) -> str:
    """``arch/spaces/x.py`` -> ``moenas.arch.spaces.x`` (``__init__.py``: the package itself,
    written as ``moenas.arch.__init__`` so that relative imports resolve from the package)."""
    rel = path.relative_to(root / folder).with_suffix("")
    return ".".join([TOP, folder, *rel.parts])


def upward_imports(folder: str, source: str, module: str) -> set[str]:
    return imported_floors(source, module) - ALLOWED[folder] - {folder}


def violations(root: Path, folder: str) -> list[str]:
    """One line per file under ``root/folder`` (nested folders included) that imports upward."""
    out = []
    for path in sorted((root / folder).rglob("*.py")):
        bad = upward_imports(folder, path.read_text(), module_name(root, folder, path))
        if bad:
            out.append(f"{path.relative_to(root)} imports {sorted(bad)} (not below {folder})")
    return out


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_point_down(folder):
    assert list((ROOT / folder).glob("*.py"))
    assert not violations(ROOT, folder)


@pytest.mark.parametrize("source, module, bad", [
    ("import moenas.search.trainer", "moenas.data.corpus", {"search"}),
    ("from moenas.predictor.api import Predictor", "moenas.profiler.runner", {"predictor"}),
    ("from moenas import search", "moenas.data.corpus", {"search"}),
    ("from moenas import Predictor", "moenas.search.constraints", {TOP}),   # the top floor's re-export
    ("from ..search import trainer", "moenas.predictor.api", {"search"}),
    ("from ...profiler.runner import Profiler", "moenas.arch.sub.x", {"profiler"}),  # a nested file
    ("def f():\n    from moenas.search import pipeline", "moenas.arch.cost", {"search"}),  # inside a function
    ("from moenas.arch import Arch\nfrom . import checks\nimport numpy", "moenas.data.corpus", set()),
])
def test_the_check_catches_each_kind_of_upward_import(source, module, bad):
    folder = module.split(".")[1]
    assert upward_imports(folder, source, module) == bad


def test_files_in_nested_folders_are_checked(tmp_path):
    (tmp_path / "data" / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "data" / "__init__.py").write_text("from .corpus import Corpus\n")
    (tmp_path / "data" / "sub" / "ok.py").write_text("from moenas.arch import Arch\nfrom .. import corpus\n")
    (tmp_path / "data" / "sub" / "deeper" / "bad.py").write_text("from moenas import search\n")
    assert violations(tmp_path, "data") == ["data/sub/deeper/bad.py imports ['search'] (not below data)"]
