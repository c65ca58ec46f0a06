"""The package's layers, read from its imports: every import points down, and nothing imports in
a circle. README.md ("How it works") states the same order for readers."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "poolwatch"

# Low to high. A module may import its own layer and the layers below it, never one above.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "poolwatch",
        "errors",
        "addresses",
        "tasks",
        "model",
        "poolxml",
        "filesystem",
        "source",
        "sdnotify",
        "deflate",
        "heap",
    ),
    # Figures read from the local filesystem (statvfs, stat, inotify): no libvirt, no config.
    ("fastpath",),
    # Pure decisions, with the rule values they take; config builds those values from TOML.
    ("policies",),
    ("config",),
    ("adapter",),
    ("inventory", "telemetry"),
    ("guests",),
    ("refreshes", "news"),
    ("watcher",),
    ("documents",),
    ("hooks",),
    ("actuator",),
    ("exporter",),
    ("web",),
    ("logsetup", "status", "demo", "daemon"),
    ("cli", "__main__"),
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """The poolwatch modules that `name` imports, wherever in the file (lazy imports count)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            # `from poolwatch.hooks import runner` imports the module poolwatch.hooks.runner.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {module for module in found if module.split(".")[0] == "poolwatch"}


def _resolve(module: str, modules: dict[str, Path]) -> str | None:
    while module and module not in modules:
        module = module.rpartition(".")[0]
    return module or None


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    for index, members in enumerate(LAYERS):
        if key in members:
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to the README")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {_resolve(module, modules) for module in _imports(name, path)}
        graph[name] = {t for t in targets if t is not None and t != name and t != "poolwatch"}
    return graph


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _layer(module)


def test_imports_point_down() -> None:
    upward = [
        f"{source} ({LAYERS[_layer(source)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for source, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(source)
    ]
    assert upward == []


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []
