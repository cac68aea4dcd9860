"""Chat titles (issue 15): the placeholder a chat gets from its first message, what the
model is asked to name a chat, and its answer made a title. Pure functions."""

from __future__ import annotations

import re

from chatsvc.wire import DEFAULT_TITLE

#: Characters of the first message's first line a placeholder title keeps.
PLACEHOLDER_CHARS = 80
#: The title's limit on the wire (``wire.Title``) and in the table.
TITLE_CHARS = 200
#: Characters of the question and of the answer the model is shown to name a chat.
EXCERPT_CHARS = 1_000
#: What the model is told, as the system message of the title request.
INSTRUCTION = (
    "You name conversations. Answer with a title of at most six words for the "
    "conversation below, in its language: no quotes, no final period, nothing else."
)

#: Markdown marks around a title, and the quotes that may enclose it (straight, curly,
#: guillemets, corner brackets): opening ones, and closing ones.
_MARKS = "*_#` "
_OPENING = "\"'\u201c\u201e\u2018\u00ab\u300c"
_CLOSING = "\"'\u201d\u201c\u2019\u00bb\u300d"
_LABEL = re.compile(r"^\s*title\s*:\s*", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def placeholder(content: str) -> str:
    """The first line of the first message: the chat's title until the model names it."""
    first_line = content.strip().splitlines()[0] if content.strip() else DEFAULT_TITLE
    return first_line[:PLACEHOLDER_CHARS]


def prompt(question: str, answer: str) -> str:
    """The user turn of the title request: the start of the conversation, shortened."""
    return (
        f"User: {question.strip()[:EXCERPT_CHARS]}\n\nAssistant: {answer.strip()[:EXCERPT_CHARS]}"
    )


def clean(answer: str) -> str | None:
    """The model's answer as a title: its first non-blank line without a "Title:" label,
    quotes or a final period, spaces collapsed, at most ``TITLE_CHARS``; ``None`` when
    nothing is left."""
    line = next((line for line in answer.splitlines() if line.strip()), "")
    line = _SPACE.sub(" ", _CONTROL.sub(" ", line))
    for strip in (_unquoted, _unlabelled, _unquoted, _without_period, _unquoted):
        line = strip(line)
    return line[:TITLE_CHARS].strip() or None


def _unquoted(line: str) -> str:
    line = line.strip().strip(_MARKS)
    if len(line) > 1 and line[0] in _OPENING and line[-1] in _CLOSING:
        line = line[1:-1]
    return line.strip()


def _unlabelled(line: str) -> str:
    return _LABEL.sub("", line)


def _without_period(line: str) -> str:
    return line.rstrip(".").strip()
