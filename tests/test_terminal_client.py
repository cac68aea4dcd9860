"""``chatsvc chat``, the terminal client, driven in a real pseudo-terminal against a real server.

A user types, reads the reply as it streams, presses Ctrl-C mid-reply (the reply
is stored ``aborted``, the client stays), uses ``/chats``, ``/new`` and ``/history``,
and leaves with Ctrl-C at the prompt, Ctrl-D or ``/quit``: exit status 0. Failures
are one line and a non-zero status, never a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from chatsvc.terminal.commands import COMMANDS
from tests.fake_openai import Script, directive
from tests.support import (
    PASSWORD,
    Server,
    User,
    clean_environment,
    free_port,
    register_and_login,
    run_chatsvc,
)

PROMPT = "you> "


def client_environment(**overrides: str) -> dict[str, str]:
    env = clean_environment(**overrides)
    if "CHATSVC_TOKEN" not in overrides:
        env.pop("CHATSVC_TOKEN", None)
    return env


def spawn_client(tmp_path: Path, *args: str, **env: str) -> pexpect.spawn:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "chatsvc", "chat", *args],
        cwd=str(tmp_path),
        env=client_environment(**env),
        encoding="utf-8",
        codec_errors="replace",
        timeout=30,
        dimensions=(50, 250),
    )
    return child


def log_in(child: pexpect.spawn, password: str = PASSWORD) -> None:
    child.expect_exact("Password: ")
    child.sendline(password)


def ends_with_status(child: pexpect.spawn, status: int) -> str:
    child.expect(pexpect.EOF)
    output = child.before
    child.close()
    assert child.exitstatus == status, output
    assert "Traceback" not in output, output
    return output


def messages(user: User, chat_id: str) -> list[dict]:
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}")
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"]


def chats(user: User) -> list[dict]:
    with user.client() as client:
        return client.get("/api/chats").json()["items"]


def make_chat(user: User, title: str, content: str) -> str:
    """A chat with one finished exchange, made over REST."""
    with user.client() as client:
        chat = client.post("/api/chats", json={"title": title}).json()
        reply = client.post(f"/api/chats/{chat['id']}/messages", json={"content": content})
        assert reply.status_code == 200, reply.text
    return chat["id"]


# --- the whole session: stream, Ctrl-C aborts, the client stays -------------------------


def test_ctrl_c_aborts_the_reply_and_the_client_stays_open(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, "--user", user.username)
    log_in(child)
    child.expect_exact(f"connected to {server.url} as {user.username}")
    child.expect_exact("No chats yet")
    child.expect_exact(PROMPT)

    child.sendline(f"count slowly {directive(tokens=300, rate=20)}")
    child.expect_exact("assistant: ")
    child.expect_exact("t0 t1 t2 t3 ")  # streaming, token by token
    child.sendintr()
    child.expect_exact("[stopped: the reply was aborted")
    shown = ("t0 t1 t2 t3 " + child.before).replace("^C", "").strip()  # ^C: the terminal's echo
    child.expect_exact(PROMPT)  # still open

    [chat] = chats(user)
    question, reply = messages(user, chat["id"])
    assert question["role"] == "user"
    assert question["content"].startswith("count slowly")
    assert reply["status"] == "aborted"
    full = Script(tokens=300).expected_text()
    assert reply["content"]
    assert full.startswith(reply["content"])
    assert len(reply["content"]) < len(full)
    assert reply["content"].strip() == shown  # the client showed exactly what was stored
    rows = server.db.query("SELECT status, content FROM message WHERE id = ?", reply["id"])
    assert [(r["status"], r["content"]) for r in rows] == [("aborted", reply["content"])]

    # The same chat goes on, and the next reply runs to its end.
    child.sendline(f"again {directive(tokens=5)}")
    child.expect_exact("assistant: " + Script(tokens=5).expected_text())
    child.expect_exact(PROMPT)
    [same] = chats(user)
    assert same["id"] == chat["id"]
    statuses = [m["status"] for m in messages(user, chat["id"])]
    assert statuses == ["complete", "aborted", "complete", "complete"]

    child.sendintr()  # Ctrl-C at the prompt leaves
    ends_with_status(child, 0)


def test_ctrl_c_before_the_first_token(server: Server, tmp_path: Path) -> None:
    """The upstream is slow to answer: Ctrl-C still stops the reply, stored empty."""
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, CHATSVC_TOKEN=user.token)
    child.expect_exact(PROMPT)
    child.sendline(f"think first {directive(tokens=5, header_delay=3)}")
    child.expect_exact("assistant: ")
    child.sendintr()
    child.expect_exact("[stopped: the reply was aborted")
    child.expect_exact(PROMPT)
    [chat] = chats(user)
    reply = messages(user, chat["id"])[-1]
    assert (reply["status"], reply["content"]) == ("aborted", "")
    child.sendline("/quit")
    ends_with_status(child, 0)


# --- commands ------------------------------------------------------------------------------


def test_chats_new_and_history(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    first = make_chat(user, "Groceries", f"apples {directive(tokens=3)}")
    child = spawn_client(tmp_path, "--url", server.url, CHATSVC_TOKEN=user.token)
    child.expect_exact("Your chats")
    assert "Password" not in child.before  # the token from the environment is enough
    child.expect(r"1\. Groceries")
    child.expect_exact("Open a chat (number), or Enter for a new one: ")
    child.sendline("7")
    child.expect_exact("pick a number from 1 to 1")
    child.sendline("1")
    child.expect_exact("Chat: Groceries")
    child.expect_exact(PROMPT)

    child.sendline("/history")
    child.expect_exact("--- Groceries")
    child.expect_exact("you: apples")
    child.expect_exact("assistant: " + Script(tokens=3).expected_text().strip())
    child.expect_exact(PROMPT)

    child.sendline("/new")
    child.expect_exact("New chat")
    child.expect_exact(PROMPT)
    child.sendline("/history")
    child.expect_exact("no messages yet")
    child.expect_exact(PROMPT)
    child.sendline(f"pears {directive(tokens=4)}")
    child.expect_exact(Script(tokens=4).expected_text())
    child.expect_exact(PROMPT)

    child.sendline("/chats")
    child.expect(r"\*\s+1\. pears")  # the new chat, current, most recent
    child.expect(r"2\. Groceries")
    child.expect_exact("Switch to (number), or Enter to stay: ")
    child.sendline("2")
    child.expect_exact("Chat: Groceries")
    child.expect_exact(PROMPT)
    child.sendline(f"plums {directive(tokens=2)}")
    child.expect_exact(Script(tokens=2).expected_text())
    child.expect_exact(PROMPT)

    child.sendline("/nonsense")
    child.expect_exact("unknown command /nonsense")
    child.expect_exact(PROMPT)
    child.sendline("/help")
    for command, _ in COMMANDS:
        child.expect_exact(command)
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    ends_with_status(child, 0)

    listed = chats(user)
    assert [c["title"].split()[0] for c in listed] == ["Groceries", "pears"]
    assert len(messages(user, first)) == 4  # the message after switching went to Groceries
    second = next(c["id"] for c in listed if c["id"] != first)
    assert [m["status"] for m in messages(user, second)] == ["complete", "complete"]


def test_open_a_chat_by_id_and_leave_with_ctrl_d(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    chat_id = make_chat(user, "Holidays", f"beach {directive(tokens=2)}")
    child = spawn_client(tmp_path, "--url", server.url, "--chat", chat_id, CHATSVC_TOKEN=user.token)
    child.expect_exact("Chat: Holidays  (2 messages")
    child.expect_exact(PROMPT)
    child.sendline("//slash stays")  # `//` sends a message that starts with `/`
    child.expect_exact("assistant: ")
    child.expect_exact(PROMPT)
    assert messages(user, chat_id)[2]["content"] == "/slash stays"
    child.sendeof()
    ends_with_status(child, 0)


def test_piped_input(server: Server, tmp_path: Path) -> None:
    """Standard input need not be a terminal: a pipe, or a file (which epoll cannot watch)."""
    user = register_and_login(server)
    env = client_environment(CHATSVC_TOKEN=user.token)
    script = f"hi {directive(tokens=3)}\n/history\n"
    piped = run_chatsvc("chat", "--url", server.url, cwd=tmp_path, env=env, stdin=script)
    assert piped.returncode == 0, piped.stderr
    assert "assistant: " + Script(tokens=3).expected_text() in piped.stdout
    assert "--- hi" in piped.stdout

    # Enter at "Open a chat (number), or Enter for a new one", then the same script.
    (tmp_path / "input.txt").write_text("\n" + f"ho {directive(tokens=3)}\n/history\n")
    with (tmp_path / "input.txt").open() as stdin:
        from_file = subprocess.run(
            [sys.executable, "-m", "chatsvc", "chat", "--url", server.url],
            cwd=tmp_path,
            env=env,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert from_file.returncode == 0, from_file.stderr
    assert "--- ho" in from_file.stdout
    assert len(chats(user)) == 2


def test_a_reply_cut_at_a_limit_says_so(server: Server, tmp_path: Path) -> None:
    """Issue 13, point 5: a reply that ended with finish reason `length` (or at the tool
    round limit) gets a line after it, and a mark in /history; a finished one gets none."""
    user = register_and_login(server)
    env = client_environment(CHATSVC_TOKEN=user.token)
    script = (
        f"story {directive(tokens=5, finish_reason='length')}\n"
        f"short {directive(tokens=2)}\n"
        f"loop {directive(loop_tools=True)}\n"
        "/history\n"
    )
    result = run_chatsvc("chat", "--url", server.url, cwd=tmp_path, env=env, stdin=script)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    cut = Script(tokens=5).expected_text()
    assert (
        f"assistant: {cut}\n"
        "[cut off: the reply reached the length limit; send `continue` for the rest]\n"
    ) in out
    assert f"assistant: {Script(tokens=2).expected_text()}\n{PROMPT}" in out
    assert "\n[cut off: the reply reached the limit of workspace tree tool rounds]\n" in out
    assert f"assistant [cut off: length limit]: {cut}\n" in out  # /history
    assert f"assistant: {Script(tokens=2).expected_text()}\n" in out.split("--- story")[1]
    assert "assistant [cut off: tool limit]: " in out
    [chat] = chats(user)
    reasons = [m["finish_reason"] for m in messages(user, chat["id"])][1::2]
    assert reasons == ["length", "stop", "tool_rounds_exceeded"]


# --- failures: one line, non-zero status ------------------------------------------------


def test_wrong_password(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, "--user", user.username)
    log_in(child, "not the password")
    output = ends_with_status(child, 1)
    assert output.strip() == "chatsvc: login failed: wrong username or password"


def test_username_is_asked_for(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url)
    child.expect_exact("Username: ")
    child.sendline(user.username)
    log_in(child)
    child.expect_exact(f"as {user.username}")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_refused_token(server: Server, tmp_path: Path) -> None:
    env = client_environment(CHATSVC_TOKEN="not-a-token")
    result = run_chatsvc("chat", "--url", server.url, cwd=tmp_path, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "chatsvc: the server refused the token (expired or invalid): "
        "run `chatsvc chat` again to log in"
    ]
    assert "Traceback" not in result.stderr + result.stdout


def test_server_down(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_chatsvc("chat", "--url", url, cwd=tmp_path, env=client_environment())
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"chatsvc: cannot reach {url}")
    assert result.stdout == ""  # nothing asked of a server that is not there
    assert "Traceback" not in result.stderr


def test_unknown_chat(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    env = client_environment(CHATSVC_TOKEN=user.token)
    missing = "00000000-0000-4000-8000-000000000000"
    result = run_chatsvc("chat", "--url", server.url, "--chat", missing, cwd=tmp_path, env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "404" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "status", "expects"),
    [
        (["--url", "localhost:8000"], {}, 1, "--url must start with http:// or https://"),
        (["--chat", "nope"], {}, 2, "not a chat id"),
        ([], {"PORT": "eighty"}, 2, "PORT"),
    ],
)
def test_bad_arguments(
    tmp_path: Path, args: list[str], env: dict[str, str], status: int, expects: str
) -> None:
    result = run_chatsvc("chat", *args, cwd=tmp_path, env=client_environment(**env))
    assert result.returncode == status
    assert expects in result.stderr
    assert "Traceback" not in result.stderr


def test_default_url_uses_port_only(tmp_path: Path) -> None:
    """Without --url: http://127.0.0.1:PORT; other settings, even broken, do not matter."""
    port = free_port()
    (tmp_path / ".env").write_text(f"PORT={port}\nDATABASE_URL=mysql://nowhere\n")
    result = run_chatsvc("chat", cwd=tmp_path, env=client_environment())
    assert result.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "chatsvc.db").exists()


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_chatsvc("chat", "--help", cwd=tmp_path, env=client_environment())
    assert result.returncode == 0, result.stderr
    assert "usage: chatsvc chat" in result.stdout
    for command, meaning in COMMANDS:
        assert re.search(rf"{command}\s+{re.escape(meaning)}", result.stdout), command
    assert "CHATSVC_TOKEN" in result.stdout
    top = run_chatsvc("--help", cwd=tmp_path, env=client_environment())
    assert "chat" in top.stdout
