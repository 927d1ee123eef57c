"""Layers point one way: an import-direction test that reads the package's import graph.

The layers, lowest first (a module may import from its own layer and any lower one):

    cohort, release  <-  secure, privacy  <-  federation  <-  site, studyplan
            <-  analytics, learn, synth, imaging, genomics, scores, report  <-  study
            <-  service, cli, demo, connection

Every ``import hemafed.x`` / ``from hemafed.x import ...`` in ``src/hemafed`` is read with
:mod:`ast`, at module level and inside functions alike (a lazy import is still a dependency).
An import that points uphill fails the test unless it is listed in :data:`KNOWN_UPHILL`, the
debt this project still carries (docs/contributing.md, "Layers"); a listed edge that no longer
exists fails too, so the list only shrinks. Import cycles (lazy imports included) fail the
same way unless listed in :data:`KNOWN_CYCLES`.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "hemafed"

LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"cohort", "errors", "atomic", "release", "kinds", "documents"}),
    frozenset({"secure", "privacy"}),
    frozenset({"federation"}),
    frozenset({"site", "studyplan"}),
    frozenset({"analytics", "learn", "synth", "imaging", "genomics", "scores", "report"}),
    frozenset({"study", "samples"}),
    frozenset({"service", "cli", "demo", "connection"}),
)

KNOWN_UPHILL: frozenset[tuple[str, str]] = frozenset({
    ("hemafed.imaging.demo", "hemafed.demo"),
    ("hemafed.imaging.demo", "hemafed.study.spec"),
    # the hub CLI of the federation package writes study reports
    ("hemafed.federation.cli", "hemafed.study.report"),
    ("hemafed.federation.cli", "hemafed.study.spec"),
    # the Flower site worker still lives in federation/flower (it opens the site store)
    ("hemafed.federation.flower.site_worker", "hemafed.site.store"),
})

KNOWN_CYCLES: frozenset[frozenset[str]] = frozenset()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    name = ".".join(("hemafed", *parts))
    return name.removesuffix(".__init__")


def _type_checking_only(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(target module, at module level)`` for every hemafed import in ``path`` that runs
    (imports under ``if TYPE_CHECKING:`` are for annotations only and are skipped)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = {id(n) for top in tree.body if _type_checking_only(top)
               for n in ast.walk(top)}
    top_level = {id(n) for n in tree.body}
    out: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(n, id(node) in top_level) for n in names if n.split(".")[0] == "hemafed"]
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return next((i for i, names in enumerate(LAYERS) if parts[1] in names), None)


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(SRC.rglob("*.py"))}


def test_every_top_level_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    missing = sorted(n for n in packages | modules if _layer(f"hemafed.{n}") is None)
    assert not missing, f"give these a layer in tests/test_layers.py LAYERS: {missing}"


def test_imports_point_downhill() -> None:
    uphill = set()
    for module, targets in _graph().items():
        here = _layer(module)
        for target, _ in targets:
            there = _layer(target)
            if here is not None and there is not None and there > here:
                uphill.add((module, target))
    new = sorted(uphill - KNOWN_UPHILL)
    assert not new, ("imports that point uphill (see the layers in tests/test_layers.py; move the "
                     "shared part down instead):\n" + "\n".join(f"  {a} -> {b}" for a, b in new))
    gone = sorted(KNOWN_UPHILL - uphill)
    assert not gone, ("these known uphill imports are gone: delete them from KNOWN_UPHILL:\n"
                      + "\n".join(f"  {a} -> {b}" for a, b in gone))


def _strongly_connected(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm,
    iterative): every module of a component reaches every other, so each is one import cycle
    however many paths run through it (a depth-first search that reports the first back edge
    it meets misses cycles that share a node with one found earlier)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[frozenset[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.add(m)
                    if m == node:
                        break
                if len(component) > 1:
                    out.append(frozenset(component))
    return out


def _import_edges() -> dict[str, set[str]]:
    graph = _graph()
    known = set(graph)
    edges: dict[str, set[str]] = defaultdict(set, {m: set() for m in known})
    for module, targets in graph.items():
        for target, _ in targets:  # lazy imports too: a cycle is a cycle
            # `from hemafed.x import y` depends on hemafed.x (y may be a module or a name)
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            # a package importing its own submodules in __init__ (or a submodule its
            # package) is not a cycle worth failing on
            if target in known and target != module and not (
                    target.startswith(module + ".") or module.startswith(target + ".")):
                edges[module].add(target)
    return edges


def test_strongly_connected_finds_every_cycle() -> None:
    # two cycles sharing module b, and a chain into them: one component of four
    edges = defaultdict(set, {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": {"b"}, "e": {"a"}})
    assert _strongly_connected(edges) == [frozenset("abcd")]


def test_no_import_cycles() -> None:
    found = set(_strongly_connected(_import_edges()))
    new = sorted(sorted(c) for c in found - KNOWN_CYCLES)
    assert not new, "import cycles (each a set of modules that import each other):\n" + \
        "\n".join("  " + ", ".join(c) for c in new)
    gone = sorted(sorted(c) for c in KNOWN_CYCLES - found)
    assert not gone, f"these known cycles are gone: delete them from KNOWN_CYCLES: {gone}"


SITE_STUDY_IMPORTS: frozenset[tuple[str, str]] = frozenset()
"""Imports of study/ from site/: none. The node, the store and the site CLI read the approved
spec's model and derive its plan through :mod:`hemafed.studyplan` (the kinds, spec rules and
planner registered into it by the top-level CLI or the standard site handler), as cohort
enrichment (the derived scores) is a hook the site runtime is given, never an import."""

DEMO_IMPORTERS = frozenset({"hemafed.cli", "hemafed.demo", "hemafed.imaging.demo"})
"""The modules that may import :mod:`hemafed.demo`: the CLI and the demos themselves."""


def test_site_does_not_import_study() -> None:
    edges = {(m, t) for m, targets in _graph().items() for t, _ in targets
             if (m == "hemafed.site" or m.startswith("hemafed.site."))
             and (t == "hemafed.study" or t.startswith("hemafed.study."))}
    assert not edges - SITE_STUDY_IMPORTS, (
        "site/ imports study/ (pass it in as a hook instead):\n"
        + "\n".join(f"  {a} -> {b}" for a, b in sorted(edges - SITE_STUDY_IMPORTS)))
    assert not SITE_STUDY_IMPORTS - edges, f"gone: {sorted(SITE_STUDY_IMPORTS - edges)}"
    assert not {e for e in edges if e[1] == "hemafed.study.derived"}


def test_only_the_cli_and_the_demos_import_the_demo() -> None:
    importers = {m for m, targets in _graph().items()
                 if any(t == "hemafed.demo" or t.startswith("hemafed.demo.") for t, _ in targets)}
    assert importers <= DEMO_IMPORTERS, sorted(importers - DEMO_IMPORTERS)
    assert "hemafed.cli" in importers  # the check reads the graph the demo is really in


def test_test_modules_import_no_test_modules() -> None:
    """Shared builders live in helper modules and fixtures, never in another test module."""
    tests = Path(__file__).resolve().parent
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(tests)} imports {n}" for n in names
                      if n.split(".")[-1].startswith("test_")]
    assert not found, "\n".join(found)
