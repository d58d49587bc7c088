"""The package's layout holds: layers as folders whose imports point down, no import circle (lazy imports
included), no module over MAX_LINES lines and no function over MAX_FUNCTION_LINES."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "speccascade_bench"
# Bottom to top: a module may import its own layer and the layers before it, never one after it.
LAYERS = ("settings", "files", "plugins", "models", "decoding", "tasks", "results", "run", "analysis", "config",
          "finetune", "toy", "verbs", "cli", "__main__")
MAX_LINES = 400
MAX_FUNCTION_LINES = 60  # docstrings counted


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its body (function-level imports included)."""
    found = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name and not name.startswith(t + ".")}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def layer(name: str) -> str:
    return name.split(".")[1] if name.count(".") else "__init__"


def test_no_import_circle(graph):
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_layers_import_only_downwards(graph):
    wrong = []
    for name, targets in graph.items():
        if layer(name) not in LAYERS:
            continue
        for target in targets:
            if layer(target) in LAYERS and LAYERS.index(layer(target)) > LAYERS.index(layer(name)):
                wrong.append(f"{name} -> {target}")
    assert not wrong, wrong
    assert {layer(name) for name in graph} - {"__init__"} == set(LAYERS)  # every folder or module has its place


def _sources() -> list[Path]:
    """The package's modules and the scripts: both kept to the same limits."""
    return [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "scripts").glob("*.py")]


def test_no_module_over_the_line_limit():
    long = {str(path.relative_to(PACKAGE.parent)): n for path in _sources()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_no_function_over_the_line_limit():
    """A function's lines from its first statement (its docstring, where it has one) to its last."""
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.body[0].lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines})")
    assert not long, long


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
    """The same checks on a made-up package: a circle and an import from a lower layer to a higher one."""
    fake = {"speccascade_bench.models.a": "from ..run import b\n",
            "speccascade_bench.run.b": "from ..models import a\n"}
    known = {}
    for name, text in fake.items():
        path = tmp_path / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        known[name] = path
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert graph == {"speccascade_bench.models.a": {"speccascade_bench.run.b"},
                     "speccascade_bench.run.b": {"speccascade_bench.models.a"}}
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circle(graph)
    with pytest.raises(AssertionError, match="models.a -> speccascade_bench.run.b"):
        test_layers_import_only_downwards(graph)


def test_the_scripts_import_only_what_the_package_has():
    """scripts/ run only in CI and by hand: a name they import that moved or vanished fails here first."""
    import importlib

    missing = []
    for path in sorted((PACKAGE.parent / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("speccascade_bench"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    try:
                        getattr(module, alias.name, None) or importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{path.name}: {node.module}.{alias.name}")
    assert not missing, missing


def test_every_method_names_a_decoder_and_its_hooks():
    """The registry is the one place a method lives: its decoder (and a derived method's derive hook) resolve, and
    a method with a router parameter names the router's level."""
    from speccascade_bench.decoding.dispatch import decoder_of
    from speccascade_bench.decoding.methods import METHODS, resolve_hook

    for name, spec in METHODS.items():
        assert callable(decoder_of(name)), name
        if spec.derived_by:
            assert callable(resolve_hook(spec.derive, "speccascade_bench.results")), name
        else:
            assert not spec.derive, name
        assert (spec.param("router") is not None) == (spec.router_level is not None), name


def test_no_private_name_is_imported_across_modules():
    """A name that starts with an underscore stays in its module: neither imported from the package's other modules
    nor read as an attribute of one."""
    import ast

    imported = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("speccascade_bench")):
                modules |= {alias.asname or alias.name for alias in node.names}
                imported += [f"{path.name}: {node.module}.{alias.name}" for alias in node.names
                             if alias.name.startswith("_") and not alias.name.startswith("__")]
        imported += [f"{path.name}: {node.value.id}.{node.attr}" for node in ast.walk(tree)
                     if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                     and node.value.id in modules and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not imported, imported
