"""No import circles in s2emu: a module never imports, directly or through others, a module that imports it.

The graph is read with ast from the source of every module of the installed package. An editable install
maps s2emu.cores, s2emu.router, ... onto the repository's top-level folders, so packages are found through
the imports that name them as well as by listing each package's folder.

What counts as an import: every import statement, wherever it stands. At module level; inside a function,
because a lazy import that keeps a circle from failing at load time is the same circle, only deferred; under
`if TYPE_CHECKING` or in a try. Importing a.b.c also runs the __init__ of a and a.b, so it depends on them,
except on the importing module's own packages, which Python has begun to run before the module.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil

ROOT = "s2emu"


class ImportGraph:
    """module -> {module it imports: (file, line) of the first statement that does}, over ROOT's modules."""

    def __init__(self):
        self.files: dict[str, str] = {}  # module -> its source file
        self.packages: set[str] = set()
        self.edges: dict[str, dict[str, tuple[str, int]]] = {}
        self._add(ROOT)
        while todo := [m for m in self.files if m not in self.edges]:
            for module in todo:
                self._read(module)

    def _add(self, name: str) -> bool:
        """Find module `name` (only its parent package runs); False if there is none."""
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return False
        self.files[name] = spec.origin
        if spec.submodule_search_locations is not None:
            self.packages.add(name)
            for info in pkgutil.iter_modules(spec.submodule_search_locations):
                if f"{name}.{info.name}" not in self.files:
                    self._add(f"{name}.{info.name}")
        return True

    def _module(self, dotted: str) -> str | None:
        """The longest prefix of `dotted` (a module, or a module and a name in it) that is one of ROOT's
        modules; never runs that module itself."""
        parts = dotted.split(".")
        if parts[0] != ROOT:
            return None
        found = ROOT
        for i in range(2, len(parts) + 1):
            if found not in self.packages:
                break
            prefix = ".".join(parts[:i])
            if prefix not in self.files and not self._add(prefix):
                break
            found = prefix
        return found

    def _read(self, module: str) -> None:
        path = self.files[module]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        package = module if module in self.packages else module.rpartition(".")[0]
        own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}  # its packages
        edges = self.edges[module] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [self._module(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                else:
                    base = node.module
                targets = [self._module(f"{base}.{a.name}") for a in node.names]
            else:
                continue
            for target in targets:
                if target is None:
                    continue
                # the packages it runs on the way (a.b.c runs a and a.b), then the target itself
                parts = target.split(".")
                above = {".".join(parts[:i]) for i in range(1, len(parts))} - own
                for dep in (*sorted(above), target):
                    if dep != module:
                        edges.setdefault(dep, (path, node.lineno))


def cycles(edges: dict[str, dict]) -> list[list[str]]:
    """Shortest cycles, each as [a, b, ..., a], that together pass through every module of every circle."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    out = []
    for component in components:
        covered = set()
        for start in sorted(component):  # a shortest cycle through each module no cycle so far went through
            if start in covered:
                continue
            came_from, frontier = {}, [start]
            while start not in came_from:  # breadth first from start, inside the component, back to start
                nxt = []
                for v in frontier:
                    for w in sorted(edges.get(v, ())):
                        if w in component and w not in came_from:
                            came_from[w] = v
                            nxt.append(w)
                frontier = nxt
            path, v = [start], came_from[start]
            while v != start:
                path.append(v)
                v = came_from[v]
            out.append([start, *reversed(path[1:]), start])
            covered.update(path)
    return sorted(out)


def describe(cycle: list[str], edges: dict) -> str:
    steps = [f"  {a} -> {b}   ({edges[a][b][0]}:{edges[a][b][1]})" for a, b in zip(cycle, cycle[1:])]
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_the_package_has_no_import_circles():
    graph = ImportGraph()
    found = cycles(graph.edges)
    assert not found, "import circles:\n" + "\n".join(describe(c, graph.edges) for c in found)


def test_the_graph_sees_every_part_of_the_package():
    """An empty or partial graph would pass the test above for nothing."""
    graph = ImportGraph()
    for module in ("s2emu.cli", "s2emu.cores.pe", "s2emu.cores.roles", "s2emu.router.router", "s2emu.host.host",
                   "s2emu.host.base", "s2emu.engines.local"):
        assert module in graph.files, module
    assert "s2emu.cores.eprop_pe" in graph.edges["s2emu.cores.roles"]
    assert "s2emu.cores.pe" in graph.edges["s2emu.cores.eprop_pe"]
    # a module depends on the packages it imports through, not on its own
    assert "s2emu.router" in graph.edges["s2emu.cores.pe"]
    assert "s2emu.cores" not in graph.edges["s2emu.cores.pe"]


def test_a_circle_is_named_with_the_lines_that_make_it():
    edges = {"a": {"b": ("a.py", 3)}, "b": {"c": ("b.py", 5)}, "c": {"a": ("c.py", 7), "d": ("c.py", 8)},
             "d": {}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert "a -> b -> c -> a" in describe(["a", "b", "c", "a"], edges) and "c.py:7" in describe(
        ["a", "b", "c", "a"], edges)
    assert cycles({"a": {"b": 0}, "b": {}}) == []
    two = {"p": {"x": 0, "y": 0}, "x": {"p": 0}, "y": {"p": 0}}  # one circle of three modules, two loops
    assert cycles(two) == [["p", "x", "p"], ["y", "p", "y"]]
