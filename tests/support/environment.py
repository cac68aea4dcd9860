"""The environment test processes start with: none of the variables a developer may export."""

from __future__ import annotations

import os

from chatsvc.settings import variable_names

#: Read besides the settings: the terminal client's token (``chatsvc chat``), and what the
#: openai SDK reads itself when the provider does not pass it (headers sent upstream).
OTHER_VARIABLES = frozenset({"CHATSVC_TOKEN", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "OPENAI_LOG"})

#: Every variable chatsvc reads: one per ``Settings`` field (derived from the type, so a new
#: setting is cleared too), and the others above. A developer's exported value of any of them
#: never reaches a server or command under test.
CHATSVC_VARIABLES = variable_names() | OTHER_VARIABLES


def clean_environment(**overrides: str) -> dict[str, str]:
    """``os.environ`` without ``CHATSVC_VARIABLES``, then ``overrides``."""
    env = {k: v for k, v in os.environ.items() if k not in CHATSVC_VARIABLES}
    env.update(overrides)
    return env
