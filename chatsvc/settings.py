"""Typed settings, read from the environment and a ``.env`` file.

Every field maps to one upper-case environment variable (``port`` -> ``PORT``).
The environment wins over ``.env``; nothing is read at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, get_args, get_type_hints
from urllib.parse import urlsplit

import msgspec
from dotenv import dotenv_values

Environment = Literal["development", "test", "production"]
LogLevel = Literal["debug", "info", "warning", "error"]

MIN_JWT_SECRET_LENGTH = 32
#: The shortest access token lifetime: short ones are for tests of refreshing clients.
MIN_ACCESS_TOKEN_SECONDS = 2

#: What a model id may be (the same rule as ``ModelName`` on the wire).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_.:/@+-]+$"
MODEL_NAME_MAX = 200

_Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]
#: PBKDF2-SHA256 rounds of a new password hash: OWASP's figure, and the least in production.
DEFAULT_PASSWORD_HASH_ROUNDS = 600_000
#: The fewest rounds any environment takes (test suites, where hashing dominates the time).
MIN_PASSWORD_HASH_ROUNDS = 1_000

#: The most tokens any reply may be asked for (the same bound as ``MaxTokens`` on the wire).
MAX_TOKENS_BOUND = 1_000_000


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole configuration of one chatsvc process."""

    database_url: Annotated[
        str,
        msgspec.Meta(
            description="sqlite:///relative.db, sqlite:////abs/path.db or "
            "postgresql://user:pass@host:port/db"
        ),
    ] = "sqlite:///chatsvc.db"
    openai_api_key: Annotated[
        str | None,
        msgspec.Meta(
            description="key for the OpenAI-compatible server; unset with no base URL: echo"
        ),
    ] = None
    openai_base_url: Annotated[
        str | None,
        msgspec.Meta(
            description="URL of any OpenAI-compatible server (vLLM, Ollama, llama.cpp...)"
        ),
    ] = None
    model_name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=200, description="model sent upstream")
    ] = "gpt-4o-mini"
    models: Annotated[
        str | None,
        msgspec.Meta(
            description="comma-separated models a chat may choose (GET /api/models), "
            "MODEL_NAME among them; unset: MODEL_NAME only"
        ),
    ] = None
    host: Annotated[str, msgspec.Meta(min_length=1, description="listen address")] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65_535, description="listen port")] = 8000
    environment: Annotated[
        Environment, msgspec.Meta(description="development, test or production")
    ] = "development"
    log_level: Annotated[LogLevel, msgspec.Meta(description="debug, info, warning or error")] = (
        "info"
    )
    jwt_secret: Annotated[
        str | None,
        msgspec.Meta(
            description=f"token signing key, at least {MIN_JWT_SECRET_LENGTH} characters; "
            "generated at start outside production"
        ),
    ] = None
    jwt_ttl_seconds: Annotated[
        int,
        msgspec.Meta(
            ge=MIN_ACCESS_TOKEN_SECONDS,
            le=30 * 86_400,
            description="access token lifetime in seconds (clients refresh it; "
            "under 60 only for tests)",
        ),
    ] = 900
    refresh_token_ttl_seconds: Annotated[
        int,
        msgspec.Meta(
            ge=60,
            le=365 * 86_400,
            description="refresh token lifetime in seconds: a session unused this long ends",
        ),
    ] = 30 * 86_400
    allow_registration: Annotated[
        bool, msgspec.Meta(description="true/false: open POST /api/auth/register")
    ] = True
    password_hash_workers: Annotated[
        int,
        msgspec.Meta(ge=1, le=64, description="threads hashing passwords at once"),
    ] = max(1, os.cpu_count() or 1)
    password_hash_rounds: Annotated[
        int,
        msgspec.Meta(
            ge=MIN_PASSWORD_HASH_ROUNDS,
            le=10_000_000,
            description="PBKDF2 rounds of new password hashes; fewer than the default only "
            "outside production, for test suites",
        ),
    ] = DEFAULT_PASSWORD_HASH_ROUNDS
    password_hash_queue: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=10_000,
            description="password checks that may wait for a hashing thread; "
            "beyond, logins answer 503 overloaded",
        ),
    ] = 16
    rate_limit_per_minute: Annotated[
        int,
        msgspec.Meta(ge=1, le=1_000_000, description="REST requests a minute, per user (or IP)"),
    ] = 300
    login_attempts_per_minute: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=1_000_000,
            description="login and register attempts a minute, per address "
            "(IPv6: per /64) and per username; the admin's logins count too",
        ),
    ] = 10
    ws_frames_per_second: Annotated[
        float,
        msgspec.Meta(gt=0, le=100_000, description="frames a second per socket (bursts of 2x)"),
    ] = 20.0
    ws_outbox_events: Annotated[
        int,
        msgspec.Meta(
            ge=8, le=1_000_000, description="events waiting for a slow socket (then 1013)"
        ),
    ] = 4096
    ws_outbox_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=64_000,
            le=1_000_000_000,
            description="bytes of events waiting for a slow socket or SSE stream (then dropped)",
        ),
    ] = 8_000_000
    ws_recheck_seconds: Annotated[
        float,
        msgspec.Meta(
            ge=0.2,
            le=300,
            description="seconds between re-checks of open sockets' users (deactivated: 4401)",
        ),
    ] = 5.0
    max_sockets_per_user: Annotated[
        int, msgspec.Meta(ge=1, le=10_000, description="open WebSockets per user")
    ] = 10
    cors_origins: Annotated[
        str | None,
        msgspec.Meta(description="comma-separated origins allowed by CORS; unset: none"),
    ] = None
    max_message_chars: Annotated[
        int, msgspec.Meta(ge=1, le=1_000_000, description="longest message content")
    ] = 16_000
    max_frame_bytes: Annotated[
        int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024, description="largest WebSocket frame")
    ] = 65_536
    max_concurrent_generations: Annotated[
        int, msgspec.Meta(ge=1, le=1000, description="running generations per user")
    ] = 3
    max_chats_per_user: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=10_000_000,
            description="chats a user may keep; a new one past it is refused (limit_reached)",
        ),
    ] = 1000
    # Imports (issue 17, point 2): what one `POST /api/import` may bring.
    import_max_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=1024,
            le=1024 * 1024 * 1024,
            description="largest import file in bytes; larger ones are refused (too_large)",
        ),
    ] = 50 * 1024 * 1024
    import_max_chats: Annotated[
        int,
        msgspec.Meta(
            ge=1, le=100_000, description="chats one import file may hold (more: too_large)"
        ),
    ] = 1000
    import_max_messages_per_chat: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=1_000_000,
            description="messages an imported chat may hold; a longer one is skipped",
        ),
    ] = 10_000
    llm_stream_idle_timeout: Annotated[
        _Seconds, msgspec.Meta(description="seconds without an upstream chunk before timeout")
    ] = 60.0
    llm_connect_timeout: Annotated[
        _Seconds, msgspec.Meta(description="seconds to connect to the upstream")
    ] = 10.0
    llm_total_timeout: Annotated[
        _Seconds, msgspec.Meta(description="longest a generation may run, in seconds")
    ] = 600.0
    llm_temperature: (
        Annotated[
            float,
            msgspec.Meta(
                ge=0, le=2, description="sampling temperature of chats that set none (0-2)"
            ),
        ]
        | None
    ) = None
    llm_top_p: (
        Annotated[
            float,
            msgspec.Meta(
                gt=0,
                le=1,
                description="nucleus sampling (top_p) of chats that set none (over 0, at most 1)",
            ),
        ]
        | None
    ) = None
    llm_max_tokens: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=MAX_TOKENS_BOUND,
                description="reply length cap of chats that set none; at most LLM_MAX_TOKENS_LIMIT",
            ),
        ]
        | None
    ) = None
    llm_max_tokens_limit: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=MAX_TOKENS_BOUND,
            description="highest max_tokens a chat may set (a higher one is refused, 422); "
            "a chat's stored value above it is sent as this",
        ),
    ] = 32_768
    daily_token_budget: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=10**12,
                description="tokens (prompt + completion) a user may spend per UTC day; "
                "beyond, replies are refused (quota_exceeded) until midnight UTC; "
                "unset: no limit (a superuser may set one per user in the admin)",
            ),
        ]
        | None
    ) = None
    chat_token_budget: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=10**12,
                description="tokens (prompt + completion) the replies of one chat may spend; "
                "beyond, its replies are refused (quota_exceeded); unset: no limit",
            ),
        ]
        | None
    ) = None
    default_system_prompt: Annotated[
        str, msgspec.Meta(max_length=32_000, description="system prompt of chats without one")
    ] = "You are a helpful assistant."
    context_budget_tokens: Annotated[
        int,
        msgspec.Meta(
            ge=100,
            le=10_000_000,
            description="history sent upstream, estimated at 4 chars a token; capped by the "
            "model's context length when its server states it",
        ),
    ] = 8000
    echo_token_delay: Annotated[
        float, msgspec.Meta(ge=0, le=10, description="seconds between echo provider tokens")
    ] = 0.05
    checkpoint_seconds: Annotated[
        _Seconds, msgspec.Meta(description="how often a streaming reply's text is saved")
    ] = 2.0
    database_write_timeout: Annotated[
        float,
        msgspec.Meta(
            gt=0,
            le=600,
            description="seconds a write may wait for the database before it is refused "
            "(overloaded); a reply's end is retried in the background",
        ),
    ] = 10.0
    llm_breaker_threshold: Annotated[
        int, msgspec.Meta(ge=1, le=1000, description="upstream outages in a row that trip it")
    ] = 5
    llm_breaker_cooldown: Annotated[
        _Seconds, msgspec.Meta(description="seconds the circuit stays open before one trial")
    ] = 30.0
    shutdown_timeout: Annotated[
        _Seconds, msgspec.Meta(description="seconds a stop may take (replies are interrupted)")
    ] = 10.0
    llm_max_retries: Annotated[
        int, msgspec.Meta(ge=0, le=10, description="upstream retries before the first token")
    ] = 2
    event_bus_url: Annotated[
        str | None,
        msgspec.Meta(description="unset (in-process), redis://... or postgresql://..."),
    ] = None
    instance_lease_seconds: Annotated[
        float,
        msgspec.Meta(
            ge=1,
            le=3600,
            description="an instance silent this long is gone; its streaming replies are "
            "interrupted by another",
        ),
    ] = 15.0
    tree_max_nodes: Annotated[
        int, msgspec.Meta(ge=1, le=1_000_000, description="nodes in a chat's tree")
    ] = 1000
    tree_max_depth: Annotated[
        int, msgspec.Meta(ge=1, le=1000, description="levels of a chat's tree (the root is 1)")
    ] = 32
    tree_max_value_chars: Annotated[
        int, msgspec.Meta(ge=1, le=1_000_000, description="characters in a node's value")
    ] = 1000
    tree_max_bytes: Annotated[
        int,
        msgspec.Meta(ge=1_000, le=100_000_000, description="bytes of a chat's tree as JSON"),
    ] = 2_000_000
    tree_max_bytes_per_user: Annotated[
        int,
        msgspec.Meta(
            ge=1_000,
            le=100_000_000_000,
            description="bytes of all of a user's workspace trees together, as JSON",
        ),
    ] = 50_000_000
    tree_op_max_bytes: Annotated[
        int,
        msgspec.Meta(
            ge=1_000,
            le=100_000_000,
            description="bytes of one patch op's value (or of what a copy copies), as JSON",
        ),
    ] = 128_000
    tree_tools: Annotated[bool, msgspec.Meta(description="offer the tree tools to the model")] = (
        True
    )
    max_tool_rounds: Annotated[
        int, msgspec.Meta(ge=1, le=100, description="tool rounds per generation")
    ] = 8
    auto_titles: Annotated[
        bool,
        msgspec.Meta(
            description="name a chat with the model after its first reply (one short "
            "request), unless its user titled it"
        ),
    ] = True
    llm_title_timeout: Annotated[
        _Seconds, msgspec.Meta(description="seconds the title request may take")
    ] = 20.0

    @staticmethod
    def _check_base_url(url: str) -> None:
        """The SDK appends ``/chat/completions`` to the URL's path: a query string would
        end up before it, and credentials in it clash with the key's header."""
        expected = "an http:// or https:// URL"
        if not re.match(r"^https?://\S+$", url):
            raise ConfigError("OPENAI_BASE_URL", url, expected)
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an IPv6 host without its closing bracket
            raise ConfigError("OPENAI_BASE_URL", url, expected) from exc
        if "@" in parts.netloc:
            raise ConfigError(
                "OPENAI_BASE_URL",
                url,
                "a URL without credentials (the key goes in OPENAI_API_KEY)",
            )
        if parts.query or parts.fragment:
            raise ConfigError(
                "OPENAI_BASE_URL",
                url,
                "a URL without a query string or fragment (the API's path is added after it)",
            )

    def __post_init__(self) -> None:
        # Shape checks msgspec's constraints cannot express.
        if not re.match(r"^(sqlite:///.+|postgres(ql)?://.+)$", self.database_url):
            raise ConfigError(
                "DATABASE_URL",
                self.database_url,
                "a URL like sqlite:///chatsvc.db or postgresql://user:pass@host:5432/db",
            )
        if self.openai_base_url is not None:
            self._check_base_url(self.openai_base_url)
        if self.event_bus_url is not None and not re.match(
            r"^(redis|rediss|postgres|postgresql)://\S+$", self.event_bus_url
        ):
            raise ConfigError(
                "EVENT_BUS_URL", self.event_bus_url, "a redis://... or postgresql://... URL"
            )
        self._check_models()
        if self.llm_max_tokens is not None and self.llm_max_tokens > self.llm_max_tokens_limit:
            raise ConfigError(
                "LLM_MAX_TOKENS",
                str(self.llm_max_tokens),
                f"at most LLM_MAX_TOKENS_LIMIT ({self.llm_max_tokens_limit}), the most a chat "
                "may ask for; raise the limit or lower the default",
            )
        if (
            self.environment == "production"
            and self.password_hash_rounds < DEFAULT_PASSWORD_HASH_ROUNDS
        ):
            raise ConfigError(
                "PASSWORD_HASH_ROUNDS",
                str(self.password_hash_rounds),
                f"at least {DEFAULT_PASSWORD_HASH_ROUNDS} in production "
                "(fewer rounds are for test suites)",
            )
        if self.jwt_secret is not None and len(self.jwt_secret) < MIN_JWT_SECRET_LENGTH:
            raise ConfigError(
                "JWT_SECRET",
                "<hidden>",
                f"at least {MIN_JWT_SECRET_LENGTH} characters "
                '(python -c "import secrets; print(secrets.token_urlsafe(48))")',
            )

    def _check_models(self) -> None:
        """``MODELS`` holds model ids only, and ``MODEL_NAME``: the model of chats with none."""
        if self.models is None:
            return
        choices = self.model_choices
        bad = [m for m in choices if len(m) > MODEL_NAME_MAX or not re.match(MODEL_NAME_PATTERN, m)]
        if not choices or bad:
            raise ConfigError(
                "MODELS",
                self.models,
                f"comma-separated model ids of 1-{MODEL_NAME_MAX} characters of "
                "letters, digits and _.:/@+-",
            )
        if self.model_name not in choices:
            raise ConfigError(
                "MODELS",
                self.models,
                f"a list that includes MODEL_NAME ({self.model_name!r}), the model of chats "
                "that choose none; add it, or set MODEL_NAME to one of the list",
            )

    def check_serving(self) -> None:
        """What only a server needs: in production, a real ``JWT_SECRET`` (and access tokens
        that last a minute at least).

        (``migrate`` and ``createuser`` sign no tokens, so they run without one.)
        """
        if self.environment != "production":
            return
        if self.jwt_secret is None:
            raise ConfigError(
                "JWT_SECRET",
                "<unset>",
                f"a secret of at least {MIN_JWT_SECRET_LENGTH} characters in production",
            )
        if _looks_like_a_placeholder(self.jwt_secret):
            raise ConfigError(
                "JWT_SECRET",
                "<hidden>",
                "a random secret in production, not a placeholder "
                '(python -c "import secrets; print(secrets.token_urlsafe(48))")',
            )
        if self.jwt_ttl_seconds < 60:
            raise ConfigError(
                "JWT_TTL_SECONDS",
                str(self.jwt_ttl_seconds),
                "at least 60 in production (shorter access tokens are for tests)",
            )

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in (self.cors_origins or "").split(",") if o.strip()]

    @property
    def model_choices(self) -> tuple[str, ...]:
        """The models a chat may choose, ``MODEL_NAME`` first (issue 12: no free text upstream)."""
        if self.models is None:
            return (self.model_name,)
        listed = [m.strip() for m in self.models.split(",") if m.strip()]
        if self.model_name in listed:
            listed.remove(self.model_name)
            listed.insert(0, self.model_name)
        return tuple(dict.fromkeys(listed))

    @property
    def llm_provider(self) -> Literal["openai", "echo"]:
        """``echo`` when neither a key nor a base URL is configured."""
        if self.openai_api_key or self.openai_base_url:
            return "openai"
        return "echo"


_PLACEHOLDERS = ("change", "secret", "example", "placeholder", "default", "password", "xxxx")


def _looks_like_a_placeholder(secret: str) -> bool:
    """Words people leave in example configs, or too few distinct characters to be random."""
    lowered = secret.lower()
    return any(word in lowered for word in _PLACEHOLDERS) or len(set(secret)) < 12


class ConfigError(ValueError):
    """A configuration value is unusable; ``str()`` is the one line to show (a URL's
    password never in it)."""

    def __init__(self, variable: str, value: str, expected: str) -> None:
        self.variable = variable
        shown = describe_url(value) if variable.endswith("_URL") else value
        super().__init__(f"invalid configuration: {variable}={shown!r} expects {expected}")


#: ``//user:password@host``: what follows the user up to the authority's last ``@``.
_PASSWORD = re.compile(r"(//[^/?#@:\s]*):[^/?#\s]*@")
#: A query parameter whose name says it holds a secret (``?password=...``, ``&api-key=``).
_SECRET_PARAM = re.compile(r"([?&][^=&#\s]*(?:pass|secret|key|token)[^=&#\s]*=)[^&#\s]*", re.I)


def describe_url(url: str) -> str:
    """The URL without its password, for logs, the start banner and configuration errors
    (even a malformed URL, which ``urlsplit`` would not take apart): the user's password
    and the values of query parameters named like secrets become ``***``."""
    return _SECRET_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1:***@", url))


FIELDS: tuple[str, ...] = Settings.__struct_fields__
SECRET_FIELDS = frozenset({"openai_api_key", "jwt_secret"})


def _env_name(field: str) -> str:
    return field.upper()


def variable_names() -> frozenset[str]:
    """Every environment variable the settings read: one per field, no aliases."""
    return frozenset(_env_name(field) for field in FIELDS)


def describe_variables() -> list[tuple[str, str, str]]:
    """``(VARIABLE, default, meaning)`` for every setting, for ``--help`` and the README."""
    schema = msgspec.json.schema(Settings)
    properties = schema["$defs"]["Settings"]["properties"]
    rows: list[tuple[str, str, str]] = []
    for field in FIELDS:
        prop = properties[field]
        default = prop.get("default")
        shown = "unset" if default is None else str(default)
        if isinstance(default, bool):
            shown = shown.lower()
        if field == "password_hash_workers":
            shown = "CPU cores"
        description = prop.get("description") or next(
            (option["description"] for option in prop.get("anyOf", []) if "description" in option),
            "",
        )
        rows.append((_env_name(field), shown, description))
    return rows


def load_settings(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> Settings:
    """Read settings from ``environ`` (default: ``os.environ``) over the ``.env`` file.

    Raises :class:`ConfigError` with a one-line message on any bad value.
    """
    environ = os.environ if environ is None else environ
    raw: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        raw.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    raw.update(environ)
    values: dict[str, str | None] = {}
    for field in FIELDS:
        value = raw.get(_env_name(field))
        if value is None or value.strip() == "":
            continue
        values[field] = value.strip()
    try:
        return msgspec.convert(values, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise _config_error(exc, values) from None


def _config_error(exc: msgspec.ValidationError, values: Mapping[str, str | None]) -> ConfigError:
    message = str(exc)
    match = re.search(r"at `\$\.(\w+)`", message)
    if match is None:  # raised by __post_init__, already a ConfigError's text
        cause = exc.__context__ or exc.__cause__
        if isinstance(cause, ConfigError):
            return cause
        return ConfigError("configuration", "?", message)
    field = match.group(1)
    shown = "<hidden>" if field in SECRET_FIELDS else str(values.get(field))
    return ConfigError(_env_name(field), shown, _expected(field, message[: match.start()]))


def _expected(field: str, msgspec_text: str) -> str:
    """Turn msgspec's ``Expected `int` <= 65535 - `` into ``an integer <= 65535``."""
    choices = get_args(_field_types()[field])
    if choices and all(isinstance(c, str) for c in choices):
        return "one of " + ", ".join(choices)
    text = msgspec_text.rstrip(" -").removeprefix("Expected ").split(", got ")[0]
    for old, new in {
        "`int`": "an integer",
        "`float`": "a number",
        "`bool`": "true or false",
        "`str`": "a string",
    }.items():
        text = text.replace(old, new)
    return text.replace("`", "")


def _field_types() -> dict[str, object]:
    hints = get_type_hints(Settings)
    return {name: hints[name] for name in FIELDS}
