"""Imports flow one way (docs/ARCHITECTURE.md): a package may import only the floors below it, and the
modules inside one floor import each other without a cycle."""

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
    package = module.split(".")[: -node.level]
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
    written as ``moenas.arch.__init__`` so that relative imports resolve from the package;
    the top floor's folder is ``moenas`` itself: ``moenas/cli.py`` -> ``moenas.cli``)."""
    rel = path.relative_to(root / folder).with_suffix("")
    package = [TOP] if folder == TOP else [TOP, folder]
    return ".".join([*package, *rel.parts])


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


@pytest.mark.parametrize(
    "source, module, bad",
    [
        ("import moenas.search.trainer", "moenas.data.corpus", {"search"}),
        ("from moenas.predictor.api import Predictor", "moenas.profiler.runner", {"predictor"}),
        ("from moenas import search", "moenas.data.corpus", {"search"}),
        ("from moenas import Predictor", "moenas.search.constraints", {TOP}),  # the top floor's re-export
        ("from ..search import trainer", "moenas.predictor.api", {"search"}),
        ("from ...profiler.runner import Profiler", "moenas.arch.sub.x", {"profiler"}),  # a nested file
        ("def f():\n    from moenas.search import pipeline", "moenas.arch.cost", {"search"}),  # inside a function
        ("from moenas.arch import Arch\nfrom . import checks\nimport numpy", "moenas.data.corpus", set()),
    ],
)
def test_the_check_catches_each_kind_of_upward_import(source, module, bad):
    folder = module.split(".")[1]
    assert upward_imports(folder, source, module) == bad


def test_files_in_nested_folders_are_checked(tmp_path):
    (tmp_path / "data" / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "data" / "__init__.py").write_text("from .corpus import Corpus\n")
    (tmp_path / "data" / "sub" / "ok.py").write_text("from moenas.arch import Arch\nfrom .. import corpus\n")
    (tmp_path / "data" / "sub" / "deeper" / "bad.py").write_text("from moenas import search\n")
    assert violations(tmp_path, "data") == ["data/sub/deeper/bad.py imports ['search'] (not below data)"]


# ---- no import cycle inside one floor ----------------------------------------------------------------

# Cycles inside one floor that stay, each with the reason it cannot be broken yet:
# (its modules, sorted) -> why. A cycle hides which module builds on which; this list only shrinks.
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {
    (
        "moenas.predictor.models",
        "moenas.predictor.transfer",
    ): "predictor files saved before transfer.py name their model moenas.predictor.models.TransferModel and "
    "skops resolves that path, so models re-exports the class (lazily) from transfer, which builds on models"
}
FLOORS = [*sorted(ALLOWED), TOP]


def node_name(module: str) -> str:
    """``moenas.arch.__init__`` -> ``moenas.arch``: a package's ``__init__`` is the package's node."""
    return module.removesuffix(".__init__")


def _known_prefix(name: str, known: set[str]) -> str | None:
    """The longest leading part of dotted ``name`` that is a module in ``known`` (None: none is)."""
    parts = name.split(".")
    while parts and ".".join(parts) not in known:
        parts.pop()
    return ".".join(parts) or None


def imported_modules(source: str, module: str, known: set[str]) -> set[str]:
    """The modules of ``known`` a file (module ``module``) imports anywhere in it: at the top, in
    a function, under ``if TYPE_CHECKING``. A function-level import still ties the two modules
    together, it only postpones the failure. ``from .x import y`` counts as module ``x.y`` when
    there is one, else as ``x``; ``from moenas.arch import Arch`` as the package ``moenas.arch``."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {m for m in (_known_prefix(n, known) for n in names) if m}
    return out - {node_name(module)}


def import_graph(root: Path, folder: str) -> dict[str, set[str]]:
    """Each module under ``root/folder`` (nested folders included) -> the modules of that same
    floor it imports."""
    paths = {module_name(root, folder, p): p for p in sorted((root / folder).rglob("*.py"))}
    known = {node_name(m) for m in paths}
    return {node_name(m): imported_modules(p.read_text(), m, known) for m, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The import cycles of ``graph``: every set of two or more modules that reach each other
    (a strongly connected component, Tarjan's algorithm), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def cycle_path(graph: dict[str, set[str]], members: tuple[str, ...]) -> list[str]:
    """One shortest chain of imports inside the cycle ``members``, from its first module back to
    it: the line to read when the check fails."""
    start, inside = members[0], set(members)
    came_from: dict[str, str | None] = {start: None}
    queue = [start]
    for v in queue:
        for w in sorted(graph[v] & inside):
            if w == start:
                path = [v]
                while came_from[path[-1]] is not None:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if w not in came_from:
                came_from[w] = v
                queue.append(w)
    raise AssertionError(f"{members} is not a cycle of the graph")


def cycle_violations(root: Path, folder: str, allowed: dict[tuple[str, ...], str] = ALLOWED_CYCLES) -> list[str]:
    """One line per import cycle under ``root/folder`` that ``allowed`` does not list (a listed
    cycle that grew by a module is a new one)."""
    graph = import_graph(root, folder)
    return [f"{folder}: import cycle {' -> '.join(cycle_path(graph, c))}" for c in cycles(graph) if c not in allowed]


@pytest.mark.parametrize("folder", FLOORS)
def test_no_import_cycle_inside_a_floor(folder):
    assert not cycle_violations(ROOT, folder)


def test_every_allowed_cycle_still_exists_and_says_why():
    """A cycle that was broken leaves the list (else it would silently allow its return)."""
    found = {c for folder in FLOORS for c in cycles(import_graph(ROOT, folder))}
    assert set(ALLOWED_CYCLES) <= found
    assert all(reason.strip() for reason in ALLOWED_CYCLES.values())


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


@pytest.mark.parametrize(
    "files, found",
    [
        ({"a.py": "from . import b\n", "b.py": "from .a import X\n"}, [("a", "b")]),  # module level
        ({"a.py": "def f():\n    from .b import g\n", "b.py": "import moenas.data.a\n"}, [("a", "b")]),  # in a function
        ({"a.py": "if TYPE_CHECKING:\n    from .b import B\n", "b.py": "from moenas.data.a import A\n"}, [("a", "b")]),
        (
            {"a.py": "from .sub.c import C\n", "sub/__init__.py": "", "sub/c.py": "from ..a import A\n"},
            [("a", "sub.c")],
        ),
        (
            {"__init__.py": "from .a import A\n", "a.py": "from moenas.data import B\n"},
            [("", "a")],
        ),  # the package itself
        (
            {"a.py": "from . import b\n", "b.py": "from . import c\n", "c.py": "from .a import A\n", "d.py": ""},
            [("a", "b", "c")],
        ),  # longer
        (
            {
                "a.py": "from .b import B\nimport numpy\nfrom moenas.arch import Arch\n",
                "b.py": "from moenas import data\n",
            },
            [],
        ),  # one way only
    ],
)
def test_the_cycle_check_catches_each_kind_of_cycle(tmp_path, files, found):
    _write(tmp_path / "data", files)
    full = lambda m: f"{TOP}.data.{m}" if m else f"{TOP}.data"  # noqa: E731
    assert cycles(import_graph(tmp_path, "data")) == [tuple(full(m) for m in c) for c in found]


def test_an_allowed_cycle_passes_and_others_fail_with_their_chain(tmp_path):
    _write(
        tmp_path / "data",
        {
            "a.py": "from . import b\n",
            "b.py": "from .a import A\n",
            "c.py": "from .d import D\n",
            "d.py": "def f():\n    from . import c\n",
        },
    )
    allowed = {("moenas.data.a", "moenas.data.b"): "kept for this test"}
    assert cycle_violations(tmp_path, "data", allowed) == [
        "data: import cycle moenas.data.c -> moenas.data.d -> moenas.data.c"
    ]
    # a third module joins the allowed cycle: that is a new cycle
    _write(tmp_path / "data", {"e.py": "from . import a\n", "b.py": "from .a import A\nfrom . import e\n"})
    assert len(cycle_violations(tmp_path, "data", allowed)) == 2


def test_the_top_floor_is_named_from_moenas_itself(tmp_path):
    _write(
        tmp_path / TOP,
        {
            "cli.py": "from .commands import fit\n",
            "commands/__init__.py": "",
            "commands/fit.py": "from moenas.cli import main\n",
        },
    )
    assert cycles(import_graph(tmp_path, TOP)) == [("moenas.cli", "moenas.commands.fit")]


# ---- no branching on a model family outside arch/family.py ----------------------------------------

# What differs between model families is looked up in a registry (arch/family.py: FamilyRegistry),
# not branched on: comparing with a family constant, or type-testing an arch for its family, is a
# dispatch that a new family would have to find and extend. (Declaring a class's family,
# ``family: ClassVar[ModelFamily] = DECODER_ONLY``, and comparing with DEFAULT_FAMILY, the family
# of files that name none, are not dispatches.)
FAMILY_CONSTANTS = {"ENCODER_DECODER", "DECODER_ONLY"}
FAMILY_TYPES = {"LMArch"}
FAMILY_HOME = "arch/family.py"
# Files that still branch on a family, each with who removes it: path -> why. This list only shrinks
# (it is empty: every floor looks its family's part up in a registry).
ALLOWED_FAMILY_DISPATCH: dict[str, str] = {}


def _named(node: ast.AST, names: set[str]) -> bool:
    """``node`` is one of ``names``, bare (``DECODER_ONLY``) or as an attribute (``family.DECODER_ONLY``)."""
    return (isinstance(node, ast.Name) and node.id in names) or (isinstance(node, ast.Attribute) and node.attr in names)


def family_dispatches(source: str) -> list[int]:
    """The lines of ``source`` that branch on a model family: a comparison (``is``, ``is not``,
    ``==``, ``!=``, ``in``) with a family constant, or ``isinstance(x, LMArch)`` (alone or in a tuple)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            if any(_named(n, FAMILY_CONSTANTS) for n in [node.left, *node.comparators]):
                lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
            kinds = node.args[1:2]
            kinds = kinds[0].elts if kinds and isinstance(kinds[0], ast.Tuple) else kinds
            if any(_named(k, FAMILY_TYPES) for k in kinds):
                lines.append(node.lineno)
    return sorted(lines)


def family_dispatch_files(root: Path) -> dict[str, list[int]]:
    """Every file of every floor (arch/family.py aside) -> the lines where it branches on a family."""
    found = {}
    for folder in FLOORS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            lines = family_dispatches(path.read_text()) if rel != FAMILY_HOME else []
            if lines:
                found[rel] = lines
    return found


def test_no_family_is_branched_on_outside_its_registries():
    bad = {f: lines for f, lines in family_dispatch_files(ROOT).items() if f not in ALLOWED_FAMILY_DISPATCH}
    assert not bad, f"register per family (arch/family.py: FamilyRegistry) instead of branching: {bad}"


def test_every_allowed_family_dispatch_still_exists_and_says_why():
    """A file that stopped branching leaves the list (else it would silently allow its return)."""
    assert set(ALLOWED_FAMILY_DISPATCH) <= set(family_dispatch_files(ROOT))
    assert all(reason.strip() for reason in ALLOWED_FAMILY_DISPATCH.values())


@pytest.mark.parametrize(
    "source, lines",
    [
        ("if arch.family is DECODER_ONLY:\n    pass\n", [1]),
        ("x = 1 if family is not ENCODER_DECODER else 2\n", [1]),
        ("ok = space.family == fam.DECODER_ONLY\n", [1]),
        ("ok = DECODER_ONLY != f\n", [1]),
        ("def f(a):\n    return isinstance(a, LMArch)\n", [2]),
        ("ok = isinstance(a, (Arch, LMArch))\n", [1]),
        ("family: ClassVar[ModelFamily] = DECODER_ONLY\n", []),  # a declaration
        ("R = FamilyRegistry('x', {ENCODER_DECODER: 1, DECODER_ONLY: 2})\n", []),  # a registration
        ("s = '' if family is DEFAULT_FAMILY else family.name\n", []),  # the family files leave unnamed
        ("ok = isinstance(a, Arch)\n", []),
    ],
)
def test_the_family_check_catches_each_kind_of_branch(source, lines):
    assert family_dispatches(source) == lines
