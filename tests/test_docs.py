"""The README documents every setting, and its commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

from chatsvc.settings import describe_variables

ROOT = Path(__file__).resolve().parent.parent


def test_readme_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, _, _ in describe_variables():
        assert f"| `{name}`" in readme, name


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv run pytest" in readme
    assert "uv run pytest" in ci
