"""The app uses none of what Litestar deprecates (what 3.0 drops): no warning as it is built."""

from __future__ import annotations

import warnings
from pathlib import Path

from litestar.exceptions import LitestarDeprecationWarning

from chatsvc.app import create_app
from chatsvc.settings import Settings
from tests.support.servers import JWT_SECRET


def test_no_route_uses_what_litestar_deprecates(tmp_path: Path) -> None:
    """Litestar warns as it reads a handler's signature: a service found by its parameter
    name alone, a `data` without a body marker, `Parameter` where `PathParameter` or
    `QueryParameter` says where the value comes from. Every route's signature is read here,
    as the first request to it would."""
    settings = Settings(jwt_secret=JWT_SECRET, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = create_app(settings)
        handlers = 0
        for route in app.routes:
            for handler in getattr(route, "route_handlers", ()):
                handler.create_kwargs_model(path_parameters=route.path_parameters)
                handlers += 1
    assert handlers > 30  # every HTTP route was read, not none
    deprecated = [
        str(w.message) for w in caught if issubclass(w.category, LitestarDeprecationWarning)
    ]
    assert deprecated == []
