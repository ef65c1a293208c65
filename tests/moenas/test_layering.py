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


def imported_subpackages(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for n in names:
            parts = n.split(".")
            if parts[0] == "moenas" and len(parts) > 1:
                out.add(parts[1])
    return out


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_point_down(folder):
    for path in sorted((ROOT / folder).glob("*.py")):
        bad = imported_subpackages(path) - ALLOWED[folder] - {folder}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (not below {folder})"
