"""Piccolo's configuration: the engine comes from ``DATABASE_URL`` (environment or ``.env``).

Piccolo imports this module itself (``engine_finder``), for the app and for
``piccolo migrations ...`` alike, so both always use the same database.
"""

from piccolo.conf.apps import AppRegistry

from chatsvc.database import engine_from_url
from chatsvc.settings import load_settings

_settings = load_settings()
DB = engine_from_url(_settings.database_url, write_seconds=_settings.database_write_timeout)

APP_REGISTRY = AppRegistry(
    apps=[
        "chatsvc.piccolo_app",
        "piccolo.apps.user.piccolo_app",
        # The sessions of the admin's logins (/admin).
        "piccolo_api.session_auth.piccolo_app",
    ]
)
