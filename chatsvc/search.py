"""Full-text search over a user's chat titles and message text (issue 17): ``GET /api/search``.

The query takes the web-search syntax PostgreSQL's ``websearch_to_tsquery`` reads: words
(all of them must match), ``"quoted phrases"``, ``-word`` or ``-"phrase"`` to exclude,
``or`` between alternatives. It is parsed here, once, for both engines: what reaches
the database is rebuilt from the parsed terms, so no user text can be an operator of
FTS5 or of the tsquery syntax. Snippets come marked with random marker strings, which
become ``[start, end)`` ranges over the plain snippet: clients never get markup.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass
from uuid import UUID

import msgspec

from chatsvc import search_store
from chatsvc.errors import InvalidInput
from chatsvc.search_store import HitRow
from chatsvc.wire import SearchHit, SearchPage

#: Longest ``q`` (characters), and most words or phrases in one query.
MAX_QUERY, MAX_TERMS = 256, 32
#: Hits per page at most, and by default.
MAX_LIMIT, DEFAULT_LIMIT = 50, 20

#: A quoted phrase (maybe unterminated, to the end), or a run of non-space characters.
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
#: A word character of a term: a term made of punctuation only finds nothing and is dropped.
_WORD = re.compile(r"[^\W_]")

_cursor = msgspec.json.Decoder(tuple[float, UUID])


@dataclass(frozen=True, slots=True)
class Term:
    text: str
    excluded: bool


@dataclass(frozen=True, slots=True)
class Query:
    """Alternatives (``or``), each of terms that must all match, or be absent if excluded;
    an alternative has at least one term that is not excluded."""

    alternatives: tuple[tuple[Term, ...], ...]

    def websearch(self) -> str:
        """For ``websearch_to_tsquery``: every term quoted, so it is read as a phrase."""
        return " or ".join(
            " ".join(f'{"-" if t.excluded else ""}"{t.text}"' for t in terms)
            for terms in self.alternatives
        )

    def fts5(self) -> str:
        """For SQLite's FTS5 ``MATCH``: every term an FTS5 string, so never an operator."""
        groups: list[str] = []
        for terms in self.alternatives:
            found = " AND ".join(f'"{t.text}"' for t in terms if not t.excluded)
            excluded = " OR ".join(f'"{t.text}"' for t in terms if t.excluded)
            groups.append(f"({found}) NOT ({excluded})" if excluded else f"({found})")
        return " OR ".join(groups)


def parse(q: str) -> Query:
    """``q`` in web-search syntax; :class:`InvalidInput` if it finds nothing to look for."""
    if "\x00" in q:
        raise InvalidInput("q: must not contain NUL characters")
    if len(q) > MAX_QUERY:
        raise InvalidInput(f"q: at most {MAX_QUERY} characters")
    alternatives: list[list[Term]] = [[]]
    count = 0
    for match in _TOKEN.finditer(q):
        minus, phrase, word = match.groups()
        if word is not None and word.lower() == "or":
            if alternatives[-1]:
                alternatives.append([])
            continue
        if word is not None:
            minus, phrase = ("-", word[1:]) if word.startswith("-") else ("", word)
        text = " ".join(phrase.replace('"', " ").split())
        if not _WORD.search(text):
            continue
        count += 1
        alternatives[-1].append(Term(text=text, excluded=bool(minus)))
    if count > MAX_TERMS:
        raise InvalidInput(f"q: at most {MAX_TERMS} words or phrases")
    kept = tuple(tuple(terms) for terms in alternatives if any(not t.excluded for t in terms))
    if not kept:
        raise InvalidInput("q: give at least one word to find (excluded words alone find nothing)")
    return Query(alternatives=kept)


def encode_cursor(score: float, hit_id: UUID) -> str:
    raw = msgspec.json.encode((score, hit_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, UUID]:
    try:
        return _cursor.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput("cursor: not a cursor returned by this API") from exc


def unmark(text: str, start: str, stop: str) -> tuple[str, list[tuple[int, int]]]:
    """The snippet without its markers, and the ``[start, end)`` ranges they enclosed."""
    plain: list[str] = []
    ranges: list[tuple[int, int]] = []
    length = position = 0
    while (opening := text.find(start, position)) >= 0:
        closing = text.find(stop, opening + len(start))
        if closing < 0:
            break
        before, marked = text[position:opening], text[opening + len(start) : closing]
        plain += (before, marked)
        length += len(before)
        if marked:
            if ranges and ranges[-1][1] == length:  # adjacent: one range
                ranges[-1] = (ranges[-1][0], length + len(marked))
            else:
                ranges.append((length, length + len(marked)))
        length += len(marked)
        position = closing + len(stop)
    plain.append(text[position:].replace(start, "").replace(stop, ""))
    return "".join(plain), ranges


async def search(
    owner: int, q: str, *, limit: int = DEFAULT_LIMIT, cursor: str | None = None
) -> SearchPage:
    """``owner``'s chat titles and messages that match ``q``, best first."""
    query = parse(q)
    after = decode_cursor(cursor) if cursor else None
    # Random per request: no stored text can contain them, so every marker is ours.
    start, stop = f"\ue000{secrets.token_hex(8)}", f"\ue001{secrets.token_hex(8)}"
    rows = await search_store.search(
        owner,
        websearch=query.websearch(),
        fts5=query.fts5(),
        after=after,
        limit=limit + 1,
        markers=(start, stop),
    )
    page, more = rows[:limit], len(rows) > limit
    last = page[-1] if page else None
    next_cursor = encode_cursor(last.score, last.hit_id) if more and last else None
    return SearchPage(items=[_hit(row, start, stop) for row in page], next_cursor=next_cursor)


def _hit(row: HitRow, start: str, stop: str) -> SearchHit:
    snippet, ranges = unmark(row.snippet, start, stop)
    return SearchHit(
        chat_id=row.chat_id,
        chat_title=row.chat_title,
        message_id=row.message_id,
        role=row.role,
        created_at=row.created_at,
        snippet=snippet,
        ranges=ranges,
        score=row.score,
    )
