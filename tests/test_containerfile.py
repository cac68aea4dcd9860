"""The Containerfile, read as instructions (no container engine runs here; CI also lints
it with hadolint): the server's user cannot change the code it runs, and nothing enters
the image unpinned but the documented base (issue 12, point 12)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CONTAINERFILE = Path(__file__).resolve().parent.parent / "Containerfile"


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """``(KEYWORD, arguments)`` per instruction, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def stages() -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    parsed: list[Stage] = []
    for keyword, rest in instructions(CONTAINERFILE.read_text()):
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?: AS (\S+))?", rest, re.IGNORECASE)
            assert match, rest
            parsed.append(Stage(match[1], match[2]))
        elif parsed:
            parsed[-1].instructions.append((keyword, rest))
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args, parsed


def test_the_runtime_user_cannot_change_the_code_it_runs() -> None:
    _, parsed = stages()
    runtime = parsed[-1]
    users = [rest for keyword, rest in runtime.instructions if keyword == "USER"]
    assert users == ["10001:10001"], users
    copies = [rest for keyword, rest in runtime.instructions if keyword == "COPY"]
    into_app = [rest for rest in copies if rest.split()[-1].startswith("/app")]
    assert into_app, copies
    # COPY without --chown leaves root the owner; the build stage took group and
    # other write bits away, so the user reads /app and writes nothing there.
    assert not [rest for rest in into_app if "--chown" in rest or "--chmod" in rest], into_app
    runs = " && ".join(rest for keyword, rest in runtime.instructions if keyword == "RUN")
    assert not re.search(r"(chown|chmod)[^&]*/app", runs), runs  # nor afterwards
    assert "chown chatsvc:chatsvc /data" in runs
    build_runs = " ".join(rest for keyword, rest in parsed[0].instructions if keyword == "RUN")
    assert "chmod -R go-w /app" in build_runs
    envs = " ".join(rest for keyword, rest in runtime.instructions if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in envs  # and the bytecode is compiled at build time
    assert "compileall" in build_runs


def test_nothing_enters_unpinned_but_the_documented_base() -> None:
    args, parsed = stages()
    names = {stage.name for stage in parsed if stage.name}
    # No other image is pulled, not even to copy one file out of it.
    for stage in parsed:
        for keyword, rest in stage.instructions:
            if keyword == "COPY" and "--from=" in rest:
                source = re.search(r"--from=(\S+)", rest)
                assert source is not None
                assert source[1] in names, rest
    # uv comes from PyPI, checked against its wheels' hashes.
    installs = [rest for keyword, rest in parsed[0].instructions if keyword == "RUN"]
    uv = next(rest for rest in installs if "uv==" in rest)
    assert "--require-hashes" in uv
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", uv)) == 2, uv
    # One base for every stage, chosen in one place (where its digest goes).
    assert {stage.image for stage in parsed} == {"${PYTHON_IMAGE}"}
    tag = r"docker\.io/library/python:3\.11-slim-bookworm"
    assert re.fullmatch(tag + r"(@sha256:[0-9a-f]{64})?", args["PYTHON_IMAGE"])
    assert "--build-arg PYTHON_IMAGE=" in CONTAINERFILE.read_text()  # how to pin it
