"""In CI an unreachable PostgreSQL fails the run instead of silently skipping it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import clean_environment, refusing_port

ROOT = Path(__file__).resolve().parent.parent


def _pytest(*, ci: bool) -> subprocess.CompletedProcess[str]:
    with refusing_port() as port:  # PostgreSQL "at" a port that refuses while pytest runs
        env = clean_environment(
            CHATSVC_TEST_POSTGRES_URL=f"postgresql://postgres@127.0.0.1:{port}/postgres"
        )
        env.pop("CHATSVC_TEST_DB", None)
        # Not measured: a nested `pytest --cov` (CI passes it in PYTEST_ADDOPTS) starts by
        # erasing the coverage data the servers of this run have saved in the same place.
        env.pop("PYTEST_ADDOPTS", None)
        if ci:
            env["CI"] = "true"
        else:
            env.pop("CI", None)
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "no:cov",
                "-n",
                "0",
                "--collect-only",
                "-q",
                "tests/test_docs.py",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def test_unreachable_postgres_fails_in_ci() -> None:
    result = _pytest(ci=True)
    assert result.returncode != 0
    assert "PostgreSQL" in result.stdout + result.stderr
    assert "unreachable" in result.stdout + result.stderr


def test_unreachable_postgres_is_announced_locally() -> None:
    result = _pytest(ci=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SQLite only" in result.stdout + result.stderr
