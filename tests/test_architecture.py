"""The house rules that keep the layout honest, read from the source: dependencies run one way (no import cycle,
function-level imports included), and nothing is imported inside a function except the heavy optional packages
(the FLUX extra, Ray) and the vidup modules built on them."""

import ast
from pathlib import Path

VIDUP = Path(__file__).resolve().parent.parent / "vidup"
# Imported on use: optional extras (and what pulls in torch's compiler), so an SR run never pays for them.
HEAVY_OPTIONAL = (
    "diffusers",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "huggingface_hub",
    "ray",
    "openvino",
    "opentimelineio",
    "playwright",
    "vidup.engines.flux",
    "vidup.train",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(VIDUP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path):
    """(imported module, inside a function?, line) for every import of `path`, TYPE_CHECKING blocks left out."""
    tree = ast.parse(path.read_text())
    name, package = module_name(path), path.name == "__init__.py"
    skipped, in_function = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for n in ast.walk(node)}
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + (1 if package else 0)]
                base = ".".join(parent + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            yield target, id(node) in in_function, node.lineno


def vidup_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in VIDUP.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in imports(path):
            if target in modules and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_in_vidup():
    graph = vidup_graph()
    assert len(graph) > 50 and graph["vidup.api"]  # the walk really read the package
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_is_imported_inside_a_function_but_heavy_optional_packages():
    inside = [
        f"{path.relative_to(VIDUP.parent)}:{line} imports {target}"
        for path in VIDUP.rglob("*.py")
        for target, in_function, line in imports(path)
        if in_function and not target.startswith(HEAVY_OPTIONAL)
    ]
    assert inside == []


def test_dependencies_point_down():
    """cli -> api/jobs -> upscaler -> engines, temporal, video -> leaves: nothing below imports what is above."""
    graph = vidup_graph()
    above = {"vidup.cli": 0, "vidup.api": 1, "vidup.jobs.job": 2, "vidup.upscaler": 3}
    for module, targets in graph.items():
        if module.startswith(("vidup.engines", "vidup.temporal", "vidup.video")):
            assert not {t for t in targets if t in above or t.startswith("vidup.jobs")}, module
    for leaf in ("vidup.config", "vidup.errors", "vidup.pixels", "vidup.sizing", "vidup.steps", "vidup.version"):
        assert graph[leaf] <= {"vidup.errors", "vidup.sizing", "vidup.steps"}, (leaf, graph[leaf])
