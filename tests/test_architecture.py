"""Dependencies point one way (transport -> application -> adapters -> leaves), and
importing chatsvc reads no settings and opens nothing."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import clean_environment

PACKAGE = Path(__file__).resolve().parent.parent / "chatsvc"

LAYERS = {
    "chatsvc": 0,
    "chatsvc.settings": 0,
    "chatsvc.errors": 0,
    "chatsvc.wire": 0,
    "chatsvc.tables": 0,
    "chatsvc.logs": 0,
    "chatsvc.audit": 0,
    "chatsvc.database": 1,
    "chatsvc.sqlite": 1,
    "chatsvc.store": 1,
    "chatsvc.piccolo_app": 1,
    "chatsvc.events": 1,
    "chatsvc.bus": 1,
    "chatsvc.tree": 1,
    "chatsvc.telemetry": 1,
    "chatsvc.providers": 1,
    "chatsvc.login_limits": 1,
    "chatsvc.generation": 2,
    "chatsvc.instances": 2,
    "chatsvc.trees": 2,
    "chatsvc.accounts": 2,
    "chatsvc.access": 2,
    "chatsvc.chats": 2,
    "chatsvc.api": 3,
    "chatsvc.app": 4,
    "chatsvc.cli": 5,
    # The terminal client (`chatsvc chat`): a client of the HTTP API, run by the CLI.
    "chatsvc.terminal": 5,
    "chatsvc.__main__": 6,
}


def _layer(module: str) -> int:
    while module not in LAYERS:
        module = module.rsplit(".", 1)[0]
    return LAYERS[module]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_imports_point_one_way() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith("chatsvc.") and _layer(target) > _layer(module):
                    violations.append(f"{module} imports {target}")
                # Handlers reach the database through the application layer only.
                if module.startswith("chatsvc.api") and target == "chatsvc.store":
                    violations.append(f"{module} imports {target}")
    assert not violations, violations
    assert all(_module_name(p) for p in PACKAGE.rglob("*.py"))


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


def test_the_terminal_client_is_only_a_client(tmp_path: Path) -> None:
    tree = ast.parse((PACKAGE / "terminal.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    ours = {name for name in imported if name.split(".")[0] == "chatsvc"}
    assert ours <= CLIENT_IMPORTS, ours - CLIENT_IMPORTS

    code = (
        "import sys, chatsvc.terminal; "
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
    assert {m for m in loaded if m.startswith("chatsvc.")} == {"chatsvc.terminal", "chatsvc.wire"}
