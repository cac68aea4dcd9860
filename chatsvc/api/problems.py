"""The error body every REST error has, and invalid input put into it."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.exceptions import ClientException, ValidationException

from chatsvc.wire import ErrorCode


class UnsupportedMediaType(ClientException):
    """415. Its own class: Litestar leaves out the traceback of a logged exception by
    the *class's* ``status_code`` (``disable_stack_trace`` in ``app.py``), and a plain
    ``HTTPException(status_code=415)`` has the class's 500."""

    status_code = 415


def error_body(status_code: int, detail: str, code: ErrorCode, **extra: Any) -> dict[str, Any]:
    return {"status_code": status_code, "detail": detail, "code": code, **extra}


def validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """Litestar's 400 shape, with a ``detail`` that names each bad field."""
    problems = [_as_sent(request, problem) for problem in _problems(exc)]
    return Response(
        error_body(400, _detail(exc, problems), "invalid_message", extra=problems),
        status_code=400,
    )


def invalid_patch(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    """For a tree patch: a malformed op is an invalid patch (422 ``invalid_patch``), as a
    patch the tree's rules refuse is; anything else (the ``version``) is invalid input."""
    problems = _problems(exc)
    if not problems or not all(str(p.get("key", "")).startswith("ops") for p in problems):
        return validation_error(request, exc)
    return Response(
        error_body(422, _detail(exc, problems), "invalid_patch", extra=problems),
        status_code=422,
    )


def _as_sent(request: Request[Any, Any, Any], problem: dict[str, Any]) -> dict[str, Any]:
    """A parameter named as the client sends it (``?from=``), not as the handler takes it."""
    if problem.get("source") not in ("query", "header", "cookie"):
        return problem
    parameters = request.route_handler.parsed_fn_signature.parameters
    field = parameters.get(str(problem.get("key")))
    name = getattr(field.kwarg_definition, "name", None) if field is not None else None
    return {**problem, "key": name} if isinstance(name, str) and name else problem


def _problems(exc: ValidationException) -> list[dict[str, Any]]:
    return exc.extra if isinstance(exc.extra, list) else []


def _detail(exc: ValidationException, problems: list[dict[str, Any]]) -> str:
    named = [f"{p.get('key')}: {p.get('message')}" for p in problems if p.get("key")]
    return "invalid input: " + "; ".join(named) if named else exc.detail
