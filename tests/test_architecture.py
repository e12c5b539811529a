"""The package's tree is its architecture: imports go one way between its rooms, from the page down to decoding, with
no circle between subpackages, and gradio only in the page. Read from the source (ast), nothing imported."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "charrnn"
# Each room and the rooms it may import. The root's small modules (vocab, cache) are below everything; cli, bench and
# __main__ are above everything (they may import anything); the package's face (__init__: the library's names and
# __version__) stands on models and decoding, so the page alone may read it.
MAY_IMPORT = {
    "decoding": {"base"},
    "models": {"decoding", "base"},
    "analysis": {"models", "decoding", "base"},
    "training": {"models", "decoding", "base"},
    "figures": {"analysis", "models", "decoding", "base"},
    "serving": {"models", "decoding", "base"},
    "page": {"serving", "figures", "analysis", "training", "models", "decoding", "base", "__init__"},
    "base": {"base"},
}
TOP = {"cli", "bench", "__main__", "__init__"}
BASE = {"vocab", "cache"}


def room(module: str) -> str:
    """charrnn.decoding.loop -> decoding; charrnn.vocab -> base; charrnn.cli -> cli."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    if (PACKAGE / parts[0]).is_dir():
        return parts[0]
    return "base" if parts[0] in BASE else parts[0]


def module_of(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, whether at the top level of the file) of every import in a file, relative ones
    resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_of(path) if path.name == "__init__.py" else module_of(path).rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
            # `from . import x` imports the module x; `from .m import name` imports m
            found += [(name if (PACKAGE.parent / (name.replace(".", "/") + ".py")).exists() else base, node.lineno,
                       id(node) in top_level) for name in names]
    return found


def charrnn_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "shipped" not in p.parts)


def room_edges() -> dict[tuple[str, str], list[str]]:
    edges = {}
    for path in charrnn_files():
        here = room(module_of(path))
        for name, line, _ in imports(path):
            if name == "charrnn" or name.startswith("charrnn."):
                there = room(name)
                if there != here:
                    edges.setdefault((here, there), []).append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return edges


def test_imports_go_one_way_between_the_rooms():
    wrong = [where for (here, there), places in room_edges().items()
             if here not in TOP and there not in MAY_IMPORT[here] for where in places]
    assert not wrong, "imports against the architecture:\n" + "\n".join(wrong)


def test_no_circle_between_subpackages():
    graph = {}
    for here, there in room_edges():
        graph.setdefault(here, set()).add(there)
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            assert state.get(nxt) != "open", f"a circle between subpackages: {' -> '.join(path + [nxt])}"
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])


def test_gradio_only_in_the_page():
    outside = [f"{path.relative_to(ROOT)}:{line}" for path in charrnn_files() if room(module_of(path)) != "page"
               for name, line, _ in imports(path) if name.split(".")[0] in ("gradio", "gradio_client")]
    assert not outside, f"gradio imported outside charrnn/page: {outside}"


def test_no_import_is_deferred_into_a_function_to_break_a_circle():
    """Only the command line defers imports (each command loads what it needs, so `charrnn --help` is quick)."""
    deferred = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in charrnn_files()
                if module_of(path) != "charrnn.cli"
                for name, line, top in imports(path) if not top and name.startswith("charrnn")]
    assert not deferred, deferred


def test_every_subpackage_says_its_job():
    for folder in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc) > 80, f"{folder.name}/__init__.py has no docstring saying what the subpackage does"
