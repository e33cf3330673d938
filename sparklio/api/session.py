"""The studio's session cookie: which credential a request carries, and the CSRF check a
cookie-authenticated change must pass.

A browser logs in with POST /api/v1/auth/session and gets two cookies:

- `sparklio_session`: the login token (HttpOnly, so a script cannot read it; SameSite=Strict,
  so another site's page cannot make the browser send it);
- `sparklio_csrf`: a value bound to that token (an HMAC of it under the token secret),
  readable by the studio's script, which sends it back as `X-CSRF-Token` on every POST, PUT,
  PATCH and DELETE. Another site can neither read it nor make one that fits the session.

An `Authorization` header always wins over the cookie, and needs no CSRF token: a script on
another site cannot make a browser send one.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response

from sparklio.exceptions import ForbiddenError
from sparklio.services.auth import AuthService

SESSION_COOKIE = "sparklio_session"
CSRF_COOKIE = "sparklio_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_PURPOSE = "studio-csrf"
#: methods that change nothing: the cookie alone is enough for them
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_MESSAGE = (
    "CSRF token missing or wrong: send the X-CSRF-Token header with the value of the "
    "sparklio_csrf cookie"
)


def credential_of(request: Request) -> tuple[str | None, bool]:
    """The request's `Authorization` header value, else its session cookie as a bearer
    credential; and whether it came from the cookie."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        return authorization, False
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None, False
    return f"Bearer {token}", True


def csrf_token(auth: AuthService, session_token: str) -> str:
    """The CSRF token that goes with a session token."""
    return auth.mac(CSRF_PURPOSE, session_token)


def check_csrf(request: Request, auth: AuthService) -> None:
    """ForbiddenError (403) unless a cookie-authenticated request that changes something
    carries `X-CSRF-Token` equal to the sparklio_csrf cookie and bound to its session."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    expected = csrf_token(auth, request.cookies.get(SESSION_COOKIE, ""))
    # compare_digest wants ASCII str; a header with other characters is simply wrong
    if not (sent.isascii() and cookie.isascii()):
        raise ForbiddenError(CSRF_MESSAGE)
    same = hmac.compare_digest(sent, cookie)
    if not (sent and same and hmac.compare_digest(sent, expected)):
        raise ForbiddenError(CSRF_MESSAGE)


def set_session_cookies(
    response: Response, token: str, csrf: str, *, max_age: int, secure: bool
) -> None:
    """Log the browser in: the session token (HttpOnly) and its CSRF token (readable)."""
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, path="/", secure=secure,
                        httponly=True, samesite="strict")  # fmt: skip
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, path="/", secure=secure,
                        httponly=False, samesite="strict")  # fmt: skip


def clear_session_cookies(response: Response, *, secure: bool) -> None:
    """Log the browser out: both cookies expire now."""
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True,
                           samesite="strict")  # fmt: skip
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="strict")


__all__ = [
    "CSRF_COOKIE",
    "CSRF_MESSAGE",
    "SESSION_COOKIE",
    "check_csrf",
    "clear_session_cookies",
    "credential_of",
    "csrf_token",
    "set_session_cookies",
]
