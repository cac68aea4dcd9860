"""``chatsvc chat``, the terminal client, driven in a real pseudo-terminal against a real server.

A user types, reads the reply as it streams, presses Ctrl-C mid-reply (the reply
is stored ``aborted``, the client stays), uses ``/chats``, ``/new`` and ``/history``,
and leaves with Ctrl-C at the prompt, Ctrl-D or ``/quit``: exit status 0. Failures
are one line and a non-zero status, never a traceback. Conversation trees (issue 15):
``/retry``, ``/edit``, ``/branches`` and ``/branch N``, checked over REST and in the
fake upstream's requests, and the ``chat_updated`` events other clients cause.
"""

from __future__ import annotations

import io
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pexpect
import pytest

from chatsvc.terminal.commands import COMMANDS
from tests.fake_openai import FakeOpenAI, Script, directive
from tests.support import (
    PASSWORD,
    Server,
    Socket,
    User,
    clean_environment,
    refusing_port,
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
    child.logfile_read = io.StringIO()  # everything the client printed: transcript(child)
    return child


def transcript(child: pexpect.spawn) -> str:
    return child.logfile_read.getvalue()


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


def tree(user: User, chat_id: str) -> list[dict]:
    """Every message of the chat, every branch, oldest first."""
    with user.client() as client:
        answer = client.get(f"/api/chats/{chat_id}/messages", params={"all": "true"})
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def active_leaf(user: User, chat_id: str) -> str | None:
    with user.client() as client:
        return client.get(f"/api/chats/{chat_id}").json()["active_leaf_id"]


def marker() -> str:
    return f"term-{secrets.token_hex(4)}"


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
    with refusing_port() as port:
        url = f"http://127.0.0.1:{port}"
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
    with refusing_port() as port:
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


# --- conversation trees: /retry, /edit, /branches, /branch N (issue 15) ---------------------


def open_chat(tmp_path: Path, user: User, chat_id: str) -> pexpect.spawn:
    child = spawn_client(
        tmp_path, "--url", user.server.url, "--chat", chat_id, CHATSVC_TOKEN=user.token
    )
    child.expect_exact("Chat: ")
    child.expect_exact(PROMPT)
    return child


def test_retry_after_a_complete_reply(server: Server, fake_llm: FakeOpenAI, tmp_path: Path) -> None:
    user = register_and_login(server)
    mark = marker()
    chat_id = make_chat(user, "Retry", f"{mark} apples {directive(tokens=3)}")
    [question, first] = messages(user, chat_id)
    child = open_chat(tmp_path, user, chat_id)

    child.sendline("/retry")
    child.expect_exact("assistant: " + Script(tokens=3).expected_text())
    child.expect_exact("[reply 2/2: /branches lists the versions]")
    child.expect_exact(PROMPT)

    replies = [m for m in tree(user, chat_id) if m["role"] == "assistant"]
    assert [r["parent_id"] for r in replies] == [question["id"], question["id"]]
    assert replies[0]["id"] == first["id"]
    assert [r["status"] for r in replies] == ["complete", "complete"]
    new = replies[1]
    assert new["sibling_ids"] == [first["id"], new["id"]]
    assert active_leaf(user, chat_id) == new["id"]
    assert [m["id"] for m in messages(user, chat_id)] == [question["id"], new["id"]]
    # The same history went upstream again.
    records = [r for r in fake_llm.records_for(mark) if r.stream]
    assert len(records) == 2
    assert records[1].messages == records[0].messages
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_retry_after_an_aborted_reply(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, CHATSVC_TOKEN=user.token)
    child.expect_exact(PROMPT)
    child.sendline(f"count {directive(tokens=30, rate=30)}")
    child.expect_exact("assistant: t0 t1 ")
    child.sendintr()
    child.expect_exact("[stopped: the reply was aborted")
    child.expect_exact(PROMPT)

    child.sendline("/retry")  # the new reply streams as any other, to its end
    child.expect_exact("assistant: " + Script(tokens=30).expected_text())
    child.expect_exact("[reply 2/2")
    child.expect_exact(PROMPT)

    [chat] = chats(user)
    question, aborted, retried = tree(user, chat["id"])
    assert aborted["status"] == "aborted"
    assert Script(tokens=30).expected_text().startswith(aborted["content"])
    assert retried["status"] == "complete"
    assert retried["content"] == Script(tokens=30).expected_text()
    assert aborted["parent_id"] == retried["parent_id"] == question["id"]
    assert active_leaf(user, chat["id"]) == retried["id"]
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_retry_after_a_failed_reply(server: Server, tmp_path: Path) -> None:
    """The upstream fails the first request (the reply is stored `failed`, the session
    goes on); the same request again succeeds, so /retry brings a complete reply."""
    user = register_and_login(server)
    child = spawn_client(tmp_path, "--url", server.url, CHATSVC_TOKEN=user.token)
    child.expect_exact(PROMPT)
    child.sendline(f"{marker()} flaky {directive(tokens=3, status=500, fail_times=1)}")
    child.expect_exact("assistant: ")
    child.expect(r"\[error: .+ \((llm_unavailable|llm_error)\)\]")
    child.expect_exact(PROMPT)
    child.sendline("/retry")
    child.expect_exact("assistant: " + Script(tokens=3).expected_text())
    child.expect_exact("[reply 2/2")
    child.expect_exact(PROMPT)
    [chat] = chats(user)
    question, failed, retried = tree(user, chat["id"])
    assert (failed["status"], retried["status"]) == ("failed", "complete")
    assert failed["parent_id"] == retried["parent_id"] == question["id"]
    assert active_leaf(user, chat["id"]) == retried["id"]
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_ctrl_c_aborts_a_retry(server: Server, tmp_path: Path) -> None:
    """Ctrl-C stops a new version as it stops any reply; the earlier one is untouched."""
    user = register_and_login(server)
    with Socket(user) as other:  # the first reply, stopped early by another client
        started = other.start(f"slow {directive(tokens=300, rate=20)}")
        other.send(action="abort", task_id=started["task_id"])
        [*_, end] = other.until_end(started["task_id"])
    assert end["type"] == "aborted", end
    chat_id = started["chat_id"]
    [_, before] = messages(user, chat_id)
    child = open_chat(tmp_path, user, chat_id)
    child.sendline("/retry")
    child.expect_exact("assistant: t0 t1 ")
    child.sendintr()
    child.expect_exact("[stopped: the reply was aborted")
    child.expect_exact(PROMPT)
    first, retried = [m for m in tree(user, chat_id) if m["role"] == "assistant"]
    kept = ("id", "status", "content", "completed_at")
    assert {k: first[k] for k in kept} == {k: before[k] for k in kept}  # as it was
    assert retried["status"] == "aborted"
    assert active_leaf(user, chat_id) == retried["id"]
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_edit_sends_the_new_text_as_a_sibling(
    server: Server, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    user = register_and_login(server)
    chat_id = make_chat(user, "Fruit", f"apples {directive(tokens=2)}")
    with user.client() as client:
        answer = client.post(
            f"/api/chats/{chat_id}/messages", json={"content": f"pears {directive(tokens=2)}"}
        )
        assert answer.status_code == 200, answer.text
    u1, a1, u2, a2 = messages(user, chat_id)
    child = open_chat(tmp_path, user, chat_id)

    child.sendline("/edit")
    child.expect_exact("Your last message:")
    child.expect_exact("  pears ")  # the old text is shown
    child.expect_exact("New text (Enter alone cancels): ")
    child.sendline("")
    child.expect_exact("Edit cancelled: nothing was sent.")
    child.expect_exact(PROMPT)
    assert len(tree(user, chat_id)) == 4

    mark = marker()
    child.sendline("/edit")
    child.expect_exact("New text (Enter alone cancels): ")
    child.sendline(f"{mark} plums {directive(tokens=4)}")
    child.expect_exact("assistant: " + Script(tokens=4).expected_text())
    child.expect_exact("[your message 2/2: /branches lists the versions]")
    child.expect_exact(PROMPT)

    edited = next(m for m in tree(user, chat_id) if mark in m["content"])
    assert edited["parent_id"] == a1["id"]  # a sibling of the message it replaces
    assert edited["sibling_ids"] == [u2["id"], edited["id"]]
    path = messages(user, chat_id)
    assert [m["id"] for m in path[:3]] == [u1["id"], a1["id"], edited["id"]]
    assert path[3]["parent_id"] == edited["id"]
    assert path[3]["content"] == Script(tokens=4).expected_text()
    assert a2["id"] in {m["id"] for m in tree(user, chat_id)}  # the old branch stays
    # Upstream went exactly the new path: not the old message, not its reply.
    [record] = [r for r in fake_llm.records_for(mark) if r.stream]
    sent = [(m["role"], m["content"]) for m in record.messages[1:]]
    assert sent == [
        ("user", u1["content"]),
        ("assistant", a1["content"]),
        ("user", edited["content"]),
    ]
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_branches_and_switching_back(server: Server, tmp_path: Path) -> None:
    """/edit of a chat's first message (a new first message), /retry, then /branches and
    /branch picks a version of the reply and of the message; REST shows the path."""
    user = register_and_login(server)
    chat_id = make_chat(user, "Versions", f"first {directive(tokens=2)}")
    [u1, a1] = messages(user, chat_id)
    child = open_chat(tmp_path, user, chat_id)
    child.sendline("/branches")
    child.expect_exact("your message 1/1")
    child.expect_exact("reply 1/1")
    child.expect_exact("This chat has one version")
    child.expect_exact(PROMPT)

    child.sendline("/edit")
    child.expect_exact("New text (Enter alone cancels): ")
    child.sendline(f"second {directive(tokens=3)}")
    child.expect_exact("[your message 2/2")
    child.expect_exact(PROMPT)
    u2 = next(m for m in tree(user, chat_id) if m["content"].startswith("second"))
    assert u2.get("parent_id") is None  # a new first message, beside the old one
    child.sendline("/retry")
    child.expect_exact("[reply 2/2")
    child.expect_exact(PROMPT)
    a2, a3 = [m for m in tree(user, chat_id) if m.get("parent_id") == u2["id"]]

    child.sendline("/branches")
    child.expect_exact("your message 2/2")
    child.expect_exact("reply 2/2")
    child.expect_exact("/branch N picks reply N")
    child.expect_exact(PROMPT)

    child.sendline("/branch 1")
    child.expect_exact("--- ")
    child.expect_exact("you (2/2): second")
    child.expect_exact("assistant (1/2): " + Script(tokens=3).expected_text().strip())
    child.expect_exact(PROMPT)
    assert active_leaf(user, chat_id) == a2["id"]
    assert [m["id"] for m in messages(user, chat_id)] == [u2["id"], a2["id"]]

    child.sendline("/branch message 1")
    child.expect_exact("you (1/2): first")
    child.expect_exact(PROMPT)
    assert [m["id"] for m in messages(user, chat_id)] == [u1["id"], a1["id"]]

    child.sendline("/branch 5")
    child.expect_exact("! pick a version from 1 to 1")
    child.sendline("/branch sideways")
    child.expect_exact("! /branch N picks reply N")
    child.expect_exact(PROMPT)
    assert active_leaf(user, chat_id) == a1["id"]
    assert a3["id"] != a2["id"]
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_a_chat_from_before_trees(server: Server, tmp_path: Path) -> None:
    """A single-path chat whose active leaf the migration left null: one version, and
    /retry and /edit work on it as on any other."""
    user = register_and_login(server)
    chat_id = make_chat(user, "Old", f"old {directive(tokens=2)}")
    server.db.query("UPDATE chat SET active_leaf = NULL WHERE id = ?", uuid.UUID(chat_id))
    assert active_leaf(user, chat_id) is None
    child = open_chat(tmp_path, user, chat_id)
    child.sendline("/branches")
    child.expect_exact("This chat has one version")
    child.expect_exact(PROMPT)
    child.sendline("/retry")
    child.expect_exact("[reply 2/2")
    child.expect_exact(PROMPT)
    [question, first, retried] = tree(user, chat_id)
    assert first["sibling_ids"] == [first["id"], retried["id"]]
    assert retried["parent_id"] == question["id"]
    assert active_leaf(user, chat_id) == retried["id"]
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_retry_and_edit_while_a_reply_runs_say_busy(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    chat_id = make_chat(user, "Busy", f"quick {directive(tokens=2)}")
    child = open_chat(tmp_path, user, chat_id)
    with Socket(user) as other:  # another client starts a long reply in the chat
        started = other.start(f"long {directive(tokens=600, rate=20)}", chat_id=chat_id)
        child.sendline("/retry")
        child.expect_exact("! a reply is already being generated in this chat (busy)")
        child.expect_exact(PROMPT)
        child.sendline("/edit")
        child.expect_exact("New text (Enter alone cancels): ")
        child.sendline("instead")
        child.expect_exact("! a reply is already being generated in this chat (busy)")
        child.expect_exact(PROMPT)
        other.send(action="abort", task_id=started["task_id"])
        other.until_end(started["task_id"])
    assert "assistant: " not in child.before
    child.sendline("/history")  # the session goes on
    child.expect_exact("you: long")
    child.expect_exact("assistant [aborted]: ")
    child.expect_exact(PROMPT)
    assert len(tree(user, chat_id)) == 4  # nothing stored for the refused ones
    child.sendline("/quit")
    ends_with_status(child, 0)


def test_a_branch_switched_by_another_client_is_noted(server: Server, tmp_path: Path) -> None:
    user = register_and_login(server)
    chat_id = make_chat(user, "Shared", f"hello {directive(tokens=2)}")
    [question, first] = messages(user, chat_id)
    child = open_chat(tmp_path, user, chat_id)
    child.sendline("/retry")
    child.expect_exact("[reply 2/2")
    child.expect_exact(PROMPT)
    with user.client() as client:  # another client goes back to the first reply
        answer = client.put(f"/api/chats/{chat_id}/active", json={"message_id": first["id"]})
        assert answer.status_code == 200, answer.text
    child.expect_exact("[another client switched this chat to another branch")
    child.expect_exact(PROMPT)  # asked again
    child.sendline("/branch 2")  # our own switch is no news
    child.expect_exact("assistant (2/2): ")
    child.expect_exact(PROMPT)
    child.sendline("/branches")
    child.expect_exact("reply 2/2")
    child.expect_exact(PROMPT)
    child.sendline("/quit")
    ends_with_status(child, 0)
    # Said once: for the other client's switch, never for this client's own moves.
    assert transcript(child).count("another client") == 1
    [_, _, retried] = tree(user, chat_id)
    assert [m["id"] for m in messages(user, chat_id)] == [question["id"], retried["id"]]


def test_the_model_names_the_chat(titled: Server, tmp_path: Path) -> None:
    user = register_and_login(titled)
    child = spawn_client(tmp_path, "--url", titled.url, CHATSVC_TOKEN=user.token)
    child.expect_exact(PROMPT)
    child.sendline(f"trip {directive(tokens=2, unstreamed_text='Planning a trip')}")
    child.expect_exact("assistant: ")
    child.expect_exact("[chat title: Planning a trip]")
    child.expect_exact(PROMPT)
    [chat] = chats(user)
    assert chat["title"] == "Planning a trip"
    child.sendline("/quit")
    ends_with_status(child, 0)
    assert "another client" not in transcript(child)
