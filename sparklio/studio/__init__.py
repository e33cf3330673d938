"""The web studio: one HTML shell and the static files its ES modules load, served at
/studio. The pages are clients of the JSON API (/api/v1), logged in by a session cookie
(`sparklio.api.session`); nothing here reads or writes data."""

from sparklio.studio.routes import STATIC_DIR, install_studio

__all__ = ["STATIC_DIR", "install_studio"]
