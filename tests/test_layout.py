"""The house rules that imports show: model/ never imports bot/; what runs at request time (the
bot, its workers, the CLI and model/'s run-time rooms) never reaches the offline lab (model/lab/,
which needs the dataset); and no two modules of bot/ and model/ import each other, directly or round
a longer circle (imports only for type checkers, under `if TYPE_CHECKING:`, do not count: they never
run)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "model")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path], type_only_too: bool = False) -> set[str]:
    """The project modules a file imports when it runs (function-level imports included; with
    type_only_too, also those only type checkers read)."""
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                 and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}  # fmt: skip
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only and not type_only_too:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:  # `from pkg import module` imports that module
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(path, known) - {name} for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_model_never_imports_bot():
    graph = import_graph()
    assert graph["model.melody.sampling"] and graph["bot.worker.generator"]  # the scan sees imports at all
    offenders = {name: sorted(t for t in targets if t.startswith("bot")) for name, targets in graph.items()
                 if name.startswith("model")}  # fmt: skip
    assert {name: found for name, found in offenders.items() if found} == {}


def reachable(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += graph[node]
    return seen


def run_time_roots(graph: dict[str, set[str]]) -> list[str]:
    """Everything the bot and its workers may import, the CLI, and every run-time room of model/."""
    lab = ("model.lab", "model.evaluate")  # model.evaluate: the lab's protocol under EVALUATION.md's name
    return [name for name in graph if name.startswith("bot") or name == "model.generate"
            or (name.startswith("model.") and not name.startswith(lab))]  # fmt: skip


def test_run_time_never_reaches_the_lab():
    graph = import_graph()
    roots = run_time_roots(graph)
    assert {"bot.worker.generator", "model.generate", "model.melody.sampling", "model.harmony.suggest"} <= set(roots)
    reached = reachable(graph, roots)
    assert "model.melody.stepping" in reached  # the scan follows imports through
    assert sorted(name for name in reached if name.startswith("model.lab")) == []


def test_the_lab_check_sees_a_run_time_import_of_the_lab():
    graph = import_graph()
    graph["model.music.keys"] = graph["model.music.keys"] | {"model.lab.data"}  # as if keys imported the lab
    assert "model.lab.data" in reachable(graph, run_time_roots(graph))


def test_command_rooms_never_import_the_handler_back():
    """The handler owns the jam commands (and the rest of bot/commands/): they get what they need
    handed to them, not by importing the handler's type, even for type checkers."""
    known = modules()
    offenders = [name for name, path in known.items() if name.startswith("bot.commands.")
                 and name != "bot.commands.handler"
                 and "bot.commands.handler" in imports_of(path, known, type_only_too=True)]  # fmt: skip
    assert offenders == []
    assert "bot.commands.jam" in imports_of(known["bot.commands.handler"], known)  # the scan sees the ownership


def test_no_import_circles():
    assert find_cycle(import_graph()) is None


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
