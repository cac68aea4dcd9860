"""The ``chatsvc`` command where it asks or refuses: ``createuser`` on a terminal (the
password typed twice, unechoed), a port that is not one, and ``chatsvc chat`` given no
username or interrupted at its first question. Terminals are real ptys (pexpect)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from tests.support import (
    PASSWORD,
    Database,
    Server,
    clean_environment,
    run_chatsvc,
    unique_username,
)

#: ``chatsvc chat``'s exit status when interrupted (chatsvc.terminal.client.EXIT_INTERRUPTED).
EXIT_INTERRUPTED = 130


def spawn(tmp_path: Path, *args: str, **env: str) -> pexpect.spawn:
    return pexpect.spawn(
        sys.executable,
        ["-m", "chatsvc", *args],
        cwd=str(tmp_path),
        env=clean_environment(**env),
        encoding="utf-8",
        codec_errors="replace",
        timeout=30,
    )


def exit_status(child: pexpect.spawn) -> tuple[int | None, str]:
    child.expect(pexpect.EOF)
    output: str = child.before
    child.close()
    return child.exitstatus, output


def test_createuser_on_a_terminal_asks_the_password_twice(
    engine: str, make_database: Callable[[str], Database], tmp_path: Path
) -> None:
    db = make_database(engine)
    rejected, created = unique_username(), unique_username()

    child = spawn(tmp_path, "createuser", rejected, DATABASE_URL=db.url)
    child.expect_exact("Password: ")
    child.sendline(PASSWORD)
    child.expect_exact("Password (again): ")
    child.sendline(PASSWORD + "-not-the-same")
    status, output = exit_status(child)
    assert status == 1, output
    assert "the two passwords differ" in output
    assert PASSWORD not in output  # never echoed

    child = spawn(tmp_path, "createuser", created, "--superuser", DATABASE_URL=db.url)
    child.expect_exact("Password: ")
    child.sendline(PASSWORD)
    child.expect_exact("Password (again): ")
    child.sendline(PASSWORD)
    status, output = exit_status(child)
    assert status == 0, output
    assert created in output
    assert PASSWORD not in output

    rows = db.query(
        "SELECT username, admin, superuser FROM piccolo_user WHERE username IN (?, ?)",
        rejected,
        created,
    )
    assert [(r["username"], bool(r["admin"]), bool(r["superuser"])) for r in rows] == [
        (created, True, True)
    ]


@pytest.mark.parametrize("port", ["eighty", "65536", "-1"])
def test_a_port_that_is_not_one_is_refused(tmp_path: Path, port: str) -> None:
    result = run_chatsvc("serve", "--port", port, cwd=tmp_path, env=clean_environment())
    assert result.returncode == 2, result.stderr
    assert f"not a port (0 to 65535): {port!r}" in result.stderr
    assert not (tmp_path / "chatsvc.db").exists()  # refused before anything was opened


def test_chat_with_no_username_given_ends_at_once(server: Server, tmp_path: Path) -> None:
    """Standard input ends before a username: one line says so, no password is asked."""
    env = clean_environment()
    result = run_chatsvc("chat", "--url", server.url, cwd=tmp_path, env=env, stdin="")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().endswith("chatsvc: no username given")
    assert "Password" not in result.stdout + result.stderr


def test_ctrl_c_at_the_username_prompt_leaves(server: Server, tmp_path: Path) -> None:
    child = spawn(tmp_path, "chat", "--url", server.url)
    child.expect_exact("Username: ")
    child.sendintr()
    status, output = exit_status(child)
    assert status == EXIT_INTERRUPTED, output
    assert "Traceback" not in output
