"""Piccolo's configuration: ``DB`` routes each query to the engine of the app running it.

Piccolo imports this module itself (``engine_finder``), for the tables, the
migrations and ``piccolo ...`` commands alike. Inside chatsvc every app binds
the engine of its own settings (``chatsvc.database.use_engine``); Piccolo's own
CLI, which runs no app, gets the engine of ``DATABASE_URL`` (environment or
``.env``), read through the same settings loader when first needed.
"""

from piccolo.conf.apps import AppRegistry

from chatsvc.database import AppEngine, engine_from_settings
from chatsvc.settings import load_settings

DB = AppEngine(fallback=lambda: engine_from_settings(load_settings()))

APP_REGISTRY = AppRegistry(
    apps=[
        "chatsvc.piccolo_app",
        "piccolo.apps.user.piccolo_app",
        # The sessions of the admin's logins (/admin).
        "piccolo_api.session_auth.piccolo_app",
    ]
)
