"""The package's shape: imports flow one way through the layers, and no module or function grows past a size a
reader can hold in mind. These read the source (ast); nothing is imported or run."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "simdistill"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "config", "__init__"),
    ("cluster",),
    ("pipeline",),
    ("models",),
    ("training",),
    ("feature_store",),
    ("data",),
    ("interop",),
    ("teacher",),
    ("teacher_export",),
    ("student_train",),
    ("evaluation",),
    ("demo",),
    ("cli_common", "cli_config", "cli_store", "cli", "__main__"),
)
"""Bottom to top: a module may import its own layer and the layers below it, never one above (docs/design.md, "Layout":
pipeline → models → training below the trainers; the store library below the exporter that writes it and the
student that reads it; the public data interface over the store (`data`) above the store and the pipeline it joins; the teacher (trained, loaded, its outputs as store arrays) below the stage that exports it
and the student that may run it online; evaluation after training; the commands on top)."""


SIDEWAYS_FORBIDDEN: dict[str, set[str]] = {"student_train": {"teacher_export"}}
"""Stages that must not import each other even where the layers would allow it: the student wing reads the store
and may run the teacher, but never the export stage (the view plan they share lives in `pipeline`)."""

MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
DATA_TABLE_MODULES = {"config/sections.py"}  # dataclass field tables: long by nature, no logic


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _unit(module: Path) -> str:
    """The layer unit of a module: its subpackage, or its own name for a top-level module."""
    rel = module.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _layer(unit: str) -> int:
    for i, units in enumerate(LAYERS):
        if unit in units:
            return i
    raise AssertionError(f"simdistill/{unit} is in no layer of tests/test_structure.py LAYERS; place it there")


def _imported_units(module: Path) -> list[tuple[int, str]]:
    """(line, unit) of every simdistill import in the module, including those inside functions."""
    tree = ast.parse(module.read_text(), filename=str(module))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if node.module == "simdistill"]
        for name in names:
            parts = name.split(".")
            if parts[0] == "simdistill" and len(parts) > 1 and not (len(parts) == 2 and parts[1] == "__version__"):
                found.append((node.lineno, parts[1]))
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in _modules():
        _layer(_unit(module))


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for module in _modules():
        own = _layer(_unit(module))
        for line, unit in _imported_units(module):
            if (PACKAGE / unit).is_dir() or (PACKAGE / f"{unit}.py").is_file():
                if _layer(unit) > own:
                    upward.append(f"{module.relative_to(PACKAGE)}:{line} imports simdistill.{unit}")
    assert not upward, "imports that go up the layers:\n" + "\n".join(upward)


def test_stages_do_not_import_each_other_sideways() -> None:
    found = [f"{module.relative_to(PACKAGE)}:{line} imports simdistill.{unit}"
             for stage, banned in SIDEWAYS_FORBIDDEN.items() for module in sorted((PACKAGE / stage).rglob("*.py"))
             for line, unit in _imported_units(module) if unit in banned]
    assert not found, "sideways imports between stages:\n" + "\n".join(found)


def test_no_import_cycle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for module in _modules():
        name = ".".join(module.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        tree = ast.parse(module.read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("simdistill"):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("simdistill")}
        graph[name] = deps - {name}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep] if dep in path else path + [dep]
            if dep not in state:
                found = visit(dep, path + [dep])
                if found:
                    return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


@pytest.mark.parametrize("module", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(module: Path) -> None:
    rel = str(module.relative_to(PACKAGE))
    lines = module.read_text().splitlines()
    if rel not in DATA_TABLE_MODULES:
        assert len(lines) <= MAX_MODULE_LINES, f"{rel} has {len(lines)} lines; split it by job"
    long = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({size} lines)")
    assert not long, f"{rel}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


FSSPEC_GLOBALS = ("config",)
"""fsspec module attributes that hold process-global settings (`fsspec.config.conf`): options travel with the store
URL instead (`feature_store.storage.StoreURL`)."""


def test_no_module_touches_fsspec_global_config() -> None:
    found = []
    for module in _modules():
        tree = ast.parse(module.read_text(), filename=str(module))
        for node in ast.walk(tree):
            hit = (isinstance(node, ast.Attribute) and node.attr in FSSPEC_GLOBALS
                   and isinstance(node.value, ast.Name) and node.value.id == "fsspec")
            hit = hit or (isinstance(node, ast.ImportFrom) and node.module is not None
                          and (node.module.startswith("fsspec.config")
                               or (node.module == "fsspec" and any(a.name in FSSPEC_GLOBALS for a in node.names))))
            hit = hit or (isinstance(node, ast.Import) and any(a.name.startswith("fsspec.config") for a in node.names))
            if hit:
                found.append(f"{module.relative_to(PACKAGE)}:{node.lineno}")
    assert not found, ("fsspec's process-global config is used (pass storage options with the URL, as a StoreURL):\n"
                       + "\n".join(found))


LIBRARY_IMPORTS: dict[str, set[str]] = {
    "feature_store": {"feature_store", "config", "errors", "cluster"},
    "data": {"data", "feature_store", "pipeline", "config", "errors"},  # a user's student loop: no models, no trainer
}
"""Units that are libraries, and the only project units they may import: the store knows its own format, not the
experiment (DESIGN.md §5; a stage translates its config at the boundary)."""


@pytest.mark.parametrize("unit", sorted(LIBRARY_IMPORTS))
def test_libraries_import_only_their_allowed_units(unit: str) -> None:
    found = [f"{module.relative_to(PACKAGE)}:{line} imports simdistill.{used}"
             for module in sorted((PACKAGE / unit).rglob("*.py"))
             for line, used in _imported_units(module) if used not in LIBRARY_IMPORTS[unit]]
    assert not found, f"simdistill/{unit} may import only {sorted(LIBRARY_IMPORTS[unit])}:\n" + "\n".join(found)


@pytest.mark.parametrize("unit", sorted(LIBRARY_IMPORTS))
def test_libraries_take_no_experiment_config(unit: str) -> None:
    """No function of a library takes the whole `Config`: it takes typed values (a layout, codec settings, a URL)."""
    found = []
    for module in sorted((PACKAGE / unit).rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
                for arg in args:
                    names = {n.id for n in ast.walk(arg.annotation) if isinstance(n, ast.Name)} if arg.annotation else set()
                    if "Config" in names:
                        found.append(f"{module.relative_to(PACKAGE)}:{node.lineno} {node.name}({arg.arg})")
    assert not found, "functions that take the experiment's Config:\n" + "\n".join(found)


TESTS = PACKAGE.parent / "tests"
TEST_FOLDERS_NOT_IN_THE_PACKAGE = {"helpers", "mmdet3d_extra", "__pycache__"}  # shared helpers; the optional extra


def test_test_folders_mirror_the_package() -> None:
    """`tests/feature_store/test_reader.py` tests `simdistill/feature_store/reader.py`: every test folder is a unit."""
    stray = [d.name for d in TESTS.iterdir() if d.is_dir() and d.name not in TEST_FOLDERS_NOT_IN_THE_PACKAGE
             and not (PACKAGE / d.name).is_dir()]
    assert not stray, f"test folders that mirror no package folder: {stray}"


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in conftest.py or tests/helpers, never in a test module another one imports."""
    found = []
    for module in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(name.split(".")[-1].startswith("test_") for name in names):
                found.append(f"{module.relative_to(TESTS)}:{node.lineno}")
    assert not found, "test modules imported by others (move the shared code to tests/helpers):\n" + "\n".join(found)
