"""Dependencies point one way (transport -> application -> adapters -> leaves) and form no
cycle; importing chatsvc reads no settings and opens nothing."""

from __future__ import annotations

import ast
import functools
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import clean_environment

PACKAGE = Path(__file__).resolve().parent.parent / "chatsvc"

#: Every module of chatsvc by layer, the bottom layer first. A module imports from its own
#: layer or below, never above. A module missing here fails the check, so a new module is
#: placed on purpose; a name here that is no module fails it too, so the map stays true.
LAYERS: list[tuple[str, set[str]]] = [
    (
        "leaves",
        {
            "chatsvc",
            "chatsvc.settings",
            "chatsvc.errors",
            "chatsvc.wire",
            "chatsvc.records",
            "chatsvc.tables",
            "chatsvc.logs",
            "chatsvc.audit",
            "chatsvc.bearer",
            "chatsvc.context",
            "chatsvc.titles",
            "chatsvc.tasks",
            "chatsvc.admission",
            "chatsvc.quota_rules",
        },
    ),
    (
        "adapters",
        {
            "chatsvc.database",
            "chatsvc.sqlite",
            "chatsvc.store",
            "chatsvc.mappers",
            "chatsvc.piccolo_app",
            "chatsvc.events",
            "chatsvc.bus",
            "chatsvc.tree",
            "chatsvc.telemetry",
            "chatsvc.providers",
            "chatsvc.providers.port",
            "chatsvc.providers.chunks",
            "chatsvc.providers.failures",
            "chatsvc.providers.openai_compatible",
            "chatsvc.providers.echo",
            "chatsvc.login_limits",
            "chatsvc.session_store",
            "chatsvc.quota_store",
            "chatsvc.key_store",
            "chatsvc.share_store",
            "chatsvc.usage_store",
            "chatsvc.search_store",
            "chatsvc.feedback_store",
            "chatsvc.transfer_store",
        },
    ),
    (
        "application",
        {
            "chatsvc.instances",
            "chatsvc.trees",
            "chatsvc.accounts",
            "chatsvc.access",
            "chatsvc.chats",
            "chatsvc.sessions",
            "chatsvc.quotas",
            "chatsvc.keys",
            "chatsvc.shares",
            "chatsvc.usage",
            "chatsvc.search",
            "chatsvc.feedback",
            "chatsvc.exports",
            "chatsvc.imports",
            "chatsvc.import_tree",
            "chatsvc.chatgpt_import",
        },
    ),
    # The generation package, one way inside too: the launcher starts a reply and the
    # registry runs it with the runner, which runs the conversation; all of them build on
    # the reply and its frames.
    ("generation: the reply", {"chatsvc.generation.reply", "chatsvc.generation.frames"}),
    (
        "generation: its parts",
        {
            "chatsvc.generation.conversation",
            "chatsvc.generation.peers",
            "chatsvc.generation.checkpoints",
            "chatsvc.generation.naming",
        },
    ),
    (
        "generation: the launcher and the runner",
        {"chatsvc.generation.launch", "chatsvc.generation.runner"},
    ),
    ("generation: the registry", {"chatsvc.generation", "chatsvc.generation.registry"}),
    (
        "transport",
        {
            "chatsvc.api",
            "chatsvc.api.admin",
            "chatsvc.api.admin_mount",
            "chatsvc.api.auth",
            "chatsvc.api.chats",
            "chatsvc.api.services",
            "chatsvc.api.docs",
            "chatsvc.api.doorbell",
            "chatsvc.api.feedback",
            "chatsvc.api.transfer",
            "chatsvc.api.headers",
            "chatsvc.api.keys",
            "chatsvc.api.shares",
            "chatsvc.api.openapi",
            "chatsvc.api.ops",
            "chatsvc.api.problems",
            "chatsvc.api.security",
            "chatsvc.api.usage",
            "chatsvc.api.search",
            "chatsvc.api.web",
            "chatsvc.api.ws",
        },
    ),
    ("composition root", {"chatsvc.app"}),
    # The terminal client (`chatsvc chat`) is a client of the HTTP API, run by the CLI.
    (
        "commands",
        {
            "chatsvc.cli",
            "chatsvc.terminal",
            "chatsvc.terminal.branches",
            "chatsvc.terminal.chat_settings",
            "chatsvc.terminal.client",
            "chatsvc.terminal.commands",
            "chatsvc.terminal.connection",
            "chatsvc.terminal.current",
            "chatsvc.terminal.frames",
            "chatsvc.terminal.reply",
            "chatsvc.terminal.rest",
            "chatsvc.terminal.screen",
            "chatsvc.terminal.stdin",
        },
    ),
    ("entry point", {"chatsvc.__main__"}),
]


def modules_of(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's ``__init__`` by the package's."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _base(node: ast.ImportFrom, module: str, path: Path) -> str:
    """The absolute module a ``from ... import`` names, its relative dots resolved."""
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


@functools.cache
def _import_statements(source: str) -> tuple[ast.Import | ast.ImportFrom, ...]:
    """A module's import statements, found once per text: the tests' copies of the package
    differ from it in one planted module at most (parsing each copy whole was two thirds of
    these tests' time: 8.8 s alone, 3.0 s with this)."""
    return tuple(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
    )


def imported_names(module: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """Every module ``module`` imports, in any form and anywhere in the file.

    ``ast.walk`` also reaches imports inside functions and ``if TYPE_CHECKING:`` blocks. Those
    count: a type-only import is a dependency of the design all the same (the importer's
    signatures change when the imported type does, and pyright reads it), and a
    ``TYPE_CHECKING`` block is exactly where a cycle hides from the interpreter.
    """
    for node in _import_statements(path.read_text()):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(node, module, path)
            for alias in node.names:
                # `from chatsvc import store` imports a module; `from chatsvc.wire import Chat`
                # (or `from chatsvc import __version__`) imports a name of one.
                submodule = f"{base}.{alias.name}"
                yield submodule if submodule in modules else base


def import_graph(package: Path) -> dict[str, set[str]]:
    """Each module of the package and the modules of the package it imports."""
    modules = modules_of(package)
    ours = package.name
    return {
        module: {
            name
            for name in imported_names(module, path, modules)
            if name.split(".")[0] == ours and name != module
        }
        for module, path in modules.items()
    }


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen: set[str] = set()
    stack = list(graph[start])
    while stack:
        module = stack.pop()
        if module not in seen:
            seen.add(module)
            stack.extend(graph.get(module, ()))
    return seen


def _shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest chain of imports from ``start`` back to itself (``start`` is on a cycle)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for target in sorted(graph.get(module, ())):
            if target == start:
                chain = [module]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if target not in came_from:
                came_from[target] = module
                queue.append(target)
    raise AssertionError(f"{start} is on no cycle")


def cycles(graph: dict[str, set[str]]) -> list[str]:
    """One line per group of modules that import each other, directly or not."""
    reachable = {module: _reachable(graph, module) for module in graph}
    groups = {
        frozenset(other for other in reachable[module] if module in reachable.get(other, ()))
        for module in graph
        if module in reachable[module]
    }
    found = []
    for group in sorted(groups, key=sorted):
        chain = _shortest_cycle(graph, min(group))
        rest = sorted(group - set(chain))
        found.append(" -> ".join(chain) + (f" (and {', '.join(rest)})" if rest else ""))
    return found


def violations(package: Path) -> list[str]:
    """Everything wrong with how the package's modules depend on each other."""
    layer_of = {module: rank for rank, (_, modules) in enumerate(LAYERS) for module in modules}
    graph = import_graph(package)
    found = [f"{m} is in no layer: place it in LAYERS" for m in sorted(graph.keys() - layer_of)]
    found += [f"LAYERS names {m}, which is no module" for m in sorted(layer_of.keys() - graph)]
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if target not in graph:
                found.append(f"{module} imports {target}, which is no module")
            # An unplaced module is reported above, not once more for each of its imports.
            elif layer_of.get(target, 0) > layer_of.get(module, len(LAYERS)):
                lower, upper = LAYERS[layer_of[module]][0], LAYERS[layer_of[target]][0]
                found.append(f"{module} ({lower}) imports {target} ({upper}), a layer above")
            # Handlers reach the database through the application layer only.
            if module.startswith("chatsvc.api") and target == "chatsvc.store":
                found.append(f"{module} imports {target}: handlers go through the use cases")
    found += [f"import cycle: {cycle}" for cycle in cycles(graph)]
    return found


def test_imports_point_one_way_without_cycles() -> None:
    assert violations(PACKAGE) == []


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of chatsvc/ to plant violations in."""
    return shutil.copytree(PACKAGE, tmp_path / "chatsvc", ignore=shutil.ignore_patterns("*.pyc"))


def _plant(package: Path, module_file: str, code: str) -> list[str]:
    """The violations that appear when ``code`` is added to ``module_file`` (or is all of it)."""
    before = violations(package)
    path = package / module_file
    text = path.read_text() if path.exists() else ""
    path.write_text(text + "\n" + code + "\n")
    return [found for found in violations(package) if found not in before]


#: chatsvc.audit is a leaf that nothing of chatsvc.telemetry (an adapter) depends on, so
#: importing telemetry from audit breaks the direction and nothing else.
UPWARD_IMPORTS = [
    "import chatsvc.telemetry",
    "import chatsvc.telemetry as telemetry",
    "from chatsvc import telemetry",
    "from chatsvc.telemetry import AbortedBy",
    "from . import telemetry",
    "from .telemetry import AbortedBy",
    "def later():\n    from chatsvc.telemetry import Telemetry",
    "import typing\nif typing.TYPE_CHECKING:\n    from chatsvc.telemetry import AbortedBy",
]


@pytest.mark.parametrize("code", UPWARD_IMPORTS)
def test_an_upward_import_fails_in_any_form(package_copy: Path, code: str) -> None:
    assert _plant(package_copy, "audit.py", code) == [
        "chatsvc.audit (leaves) imports chatsvc.telemetry (adapters), a layer above"
    ]


def test_a_relative_upward_import_in_a_subpackage_fails(package_copy: Path) -> None:
    """``..`` from chatsvc/api/ is chatsvc itself."""
    assert _plant(package_copy, "api/problems.py", "from .. import terminal") == [
        "chatsvc.api.problems (transport) imports chatsvc.terminal (commands), a layer above"
    ]


def test_a_cycle_within_one_layer_fails(package_copy: Path) -> None:
    """store imports database (both adapters); database importing store closes a cycle."""
    assert _plant(package_copy, "database.py", "from chatsvc import store") == [
        "import cycle: chatsvc.database -> chatsvc.store -> chatsvc.database"
    ]


def test_a_cycle_through_a_type_checking_import_fails(package_copy: Path) -> None:
    """chats.py and generation.py once imported each other this way."""
    code = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .auth import AuthRequest"
    assert _plant(package_copy, "api/openapi.py", code) == [
        "import cycle: chatsvc.api.auth -> chatsvc.api.openapi -> chatsvc.api.auth"
    ]


@pytest.mark.parametrize("module_file", ["newthing.py", "api/newthing.py"])
def test_a_module_in_no_layer_fails(package_copy: Path, module_file: str) -> None:
    module = "chatsvc." + module_file.removesuffix(".py").replace("/", ".")
    assert _plant(package_copy, module_file, '"""A new module, not yet placed."""') == [
        f"{module} is in no layer: place it in LAYERS"
    ]


def test_a_new_subpackage_fails_until_placed(package_copy: Path) -> None:
    (package_copy / "replies").mkdir()
    assert _plant(package_copy, "replies/__init__.py", '"""A new package."""') == [
        "chatsvc.replies is in no layer: place it in LAYERS"
    ]
    assert _plant(package_copy, "replies/runner.py", "from ..errors import ChatsvcError") == [
        "chatsvc.replies.runner is in no layer: place it in LAYERS"
    ]


def test_an_import_of_no_module_fails(package_copy: Path) -> None:
    assert _plant(package_copy, "audit.py", "import chatsvc.nothing") == [
        "chatsvc.audit imports chatsvc.nothing, which is no module"
    ]


def test_a_layer_map_naming_a_deleted_module_fails(package_copy: Path) -> None:
    before = violations(package_copy)
    (package_copy / "__main__.py").unlink()
    assert [found for found in violations(package_copy) if found not in before] == [
        "LAYERS names chatsvc.__main__, which is no module"
    ]


def test_handlers_do_not_reach_the_store(package_copy: Path) -> None:
    assert _plant(package_copy, "api/ops.py", "from chatsvc.store import now") == [
        "chatsvc.api.ops imports chatsvc.store: handlers go through the use cases"
    ]


def test_importing_reads_no_settings_and_opens_nothing(tmp_path: Path) -> None:
    env = clean_environment(DATABASE_URL="mysql://nowhere", PORT="not-a-port")
    code = "import chatsvc.app, chatsvc.cli, chatsvc.api.ws; print('imported')"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"
    assert list(tmp_path.iterdir()) == []


#: What the terminal client may import of chatsvc: the wire types, nothing of the server.
CLIENT_IMPORTS = {"chatsvc", "chatsvc.wire"}
SERVER_PACKAGES = ("litestar", "piccolo", "piccolo_admin", "uvicorn", "asyncpg", "openai", "redis")


def _terminal(module: str) -> bool:
    return module == "chatsvc.terminal" or module.startswith("chatsvc.terminal.")


def test_the_terminal_client_is_only_a_client(tmp_path: Path) -> None:
    graph = import_graph(PACKAGE)
    ours = {target for module in graph if _terminal(module) for target in graph[module]}
    outside = {module for module in ours if not _terminal(module)}
    assert outside <= CLIENT_IMPORTS, outside - CLIENT_IMPORTS

    code = (
        "import sys, chatsvc.terminal.client; "
        "print(sorted({m.split('.')[0] for m in sys.modules} | "
        "{m for m in sys.modules if m.startswith('chatsvc.')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_environment(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(ast.literal_eval(result.stdout.strip()))
    assert not loaded & set(SERVER_PACKAGES), loaded & set(SERVER_PACKAGES)
    chatsvc_modules = {m for m in loaded if m.startswith("chatsvc.")}
    assert {m for m in chatsvc_modules if not _terminal(m)} == {"chatsvc.wire"}


def test_the_generation_core_stays_readable_in_one_sitting() -> None:
    """Issue 14: no module of chatsvc/generation/ over 300 lines."""
    sizes = {
        path.name: len(path.read_text(encoding="utf-8").splitlines())
        for path in (PACKAGE / "generation").glob("*.py")
    }
    assert {name: size for name, size in sizes.items() if size > 300} == {}
    assert len(sizes) > 5  # the package was read
