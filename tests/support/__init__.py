"""What the tests share besides fixtures: databases, servers, users and sockets.

``tests/conftest.py`` keeps only fixtures and hooks; tests import helpers from here.
"""

from tests.support.databases import PG_ADMIN_URL, Database, run_async
from tests.support.environment import CHATSVC_VARIABLES, clean_environment
from tests.support.inprocess import AppServer, start_app_server
from tests.support.servers import (
    HIGH_LIMITS,
    JWT_SECRET,
    OTHER_MODEL,
    SERVER_START_SECONDS,
    TEST_HASH_ROUNDS,
    UPSTREAM_KEY,
    Server,
    refusing_port,
    run_chatsvc,
    start_server,
    upstream_settings,
)
from tests.support.sockets import TERMINAL, Frame, Socket, tokens_of
from tests.support.users import (
    PASSWORD,
    User,
    create_account,
    insert_message,
    register_and_login,
    unique_username,
)
from tests.support.waiting import wait_until

__all__ = [
    "CHATSVC_VARIABLES",
    "HIGH_LIMITS",
    "JWT_SECRET",
    "OTHER_MODEL",
    "PASSWORD",
    "PG_ADMIN_URL",
    "SERVER_START_SECONDS",
    "TERMINAL",
    "TEST_HASH_ROUNDS",
    "UPSTREAM_KEY",
    "AppServer",
    "Database",
    "Frame",
    "Server",
    "Socket",
    "User",
    "clean_environment",
    "create_account",
    "insert_message",
    "refusing_port",
    "register_and_login",
    "run_async",
    "run_chatsvc",
    "start_app_server",
    "start_server",
    "tokens_of",
    "unique_username",
    "upstream_settings",
    "wait_until",
]
