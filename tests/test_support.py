"""The test environment: what a developer exported never reaches a process under test."""

from __future__ import annotations

import msgspec
import pytest

from chatsvc.settings import Settings
from tests.support import CHATSVC_VARIABLES, clean_environment


def test_every_setting_is_cleared(monkeypatch: pytest.MonkeyPatch) -> None:
    # Derived from the settings type: a setting added later is cleared without a list to edit.
    fields = {field.encode_name.upper() for field in msgspec.structs.fields(Settings)}
    assert fields <= CHATSVC_VARIABLES
    for variable in (*fields, "CHATSVC_TOKEN"):
        monkeypatch.setenv(variable, "exported-by-a-developer")
    monkeypatch.setenv("UNRELATED_VARIABLE", "kept")

    env = clean_environment(PORT="1234")

    assert env["PORT"] == "1234"
    assert env["UNRELATED_VARIABLE"] == "kept"
    assert not {name for name in env if env[name] == "exported-by-a-developer"}
