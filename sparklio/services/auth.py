"""Who is calling, and may they: users, passwords, API keys and tokens.

`AuthService` is built once per app (`create_app` keeps it in the app's `Services`) and keeps
all of its state on the instance: the principal cache, the failed-login windows and the JWT
secret.

- Passwords are hashed with argon2id; hashing and verifying run on a worker thread.
- API keys are `sk-spk-<random>`; only their sha256 and their first 14 characters are stored.
- Tokens are HS256 JWTs (`sub`, `role`, `iat`, `exp`) signed with JWT_SECRET, or with a secret
  generated once in SPARKLIO_HOME/jwt_secret (mode 0600).
- `authenticate` runs on every model call, so a resolved principal is cached for a few seconds
  per credential (keyed by its sha256). Revoking a key or deactivating a user drops the entries
  at once in this process. Without Redis, other processes see the change within `CACHE_TTL`
  seconds; with REDIS_URL, at their next request (`auth_shared`: a version key read before a
  cached entry is trusted, and a channel that drops the entries on every process).
- While the database is down, a credential approved before the outage keeps working (until it
  expires), the `last_used_at` bookkeeping is skipped, and everything that needs the database
  (log in, keys, users) raises DatabaseUnavailableError (503 with Retry-After).
- Failed logins are counted per (account, client address) and per address, never per account
  alone: a stranger guessing someone's password locks out only themselves. With REDIS_URL the
  counts are shared by every process.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, ParamSpec, TypeVar

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from sparklio.core.config import Settings
from sparklio.core.files import private_dir
from sparklio.db.engine import database_url, make_engine, sessions
from sparklio.db.errors import is_outage, outage_error
from sparklio.db.models import ApiKey, RevokedSession, User, new_id, now
from sparklio.exceptions import (
    ConfigError,
    DatabaseUnavailableError,
    ForbiddenError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
)
from sparklio.services.auth_input import (
    MAX_EMAIL,
    MAX_NAME,
    MAX_PASSWORD,
    address_key,
    check_email,
    check_password,
    check_role,
    check_text,
)
from sparklio.services.auth_shared import SharedAuth
from sparklio.services.auth_state import LocalLoginLimits, LoginLimits, PrincipalCache

log = logging.getLogger("sparklio.auth")

KEY_PREFIX = "sk-spk-"
PREFIX_LENGTH = 14  # "sk-spk-" and 7 random characters: enough to tell keys apart
HOW_TO = (
    "send Authorization: Bearer <API key or token>; get a key with "
    "`sparklio create-test-users` or POST /api/v1/auth/api-keys"
)
TEST_USERS = (("admin@sparklio.local", "admin"), ("member@sparklio.local", "member"))
LOCAL_EMAIL = "local@sparklio.local"
LOCAL_TOKEN_MINUTES = 60
CACHE_TTL = 10.0  # seconds a resolved credential is trusted without the database
CACHE_SIZE = 10_000
TOUCH_EVERY = 60.0  # seconds between two writes of a key's last_used_at
LOGIN_FAILURES = 5  # failed logins allowed per (account, address) in LOGIN_WINDOW
ADDRESS_FAILURES = 20  # ... and per address, whatever the accounts (an office shares one)
LOGIN_WINDOW = 300.0
MIN_SECRET = 32  # bytes; HS256 wants a key at least as long as its hash
_UNUSABLE = "!"  # a password hash starting with this never verifies
LOG_IN_AGAIN = "log in again with POST /api/v1/auth/login (or /api/v1/auth/session)"

Via = Literal["key", "token"]
_P = ParamSpec("_P")
_T = TypeVar("_T")


def _needs_database(
    method: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """`method`, raising DatabaseUnavailableError (503 with Retry-After) when the database
    cannot be reached, rather than the driver's error (a 500). Only on methods that do
    nothing but database work and hashing: `is_outage` takes any OSError for an outage."""

    @functools.wraps(method)
    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except GatewayError:
            raise
        except Exception as exc:
            if is_outage(exc):
                raise outage_error(exc) from exc
            raise

    return wrapper


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as."""

    user_id: str
    email: str
    role: str
    via: Via
    key_id: str | None = None
    #: a studio session's id (the token's `sid`), which logging out revokes
    session_id: str | None = None
    #: when a token credential expires (a Unix time); None for an API key
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Token:
    """A signed access token, as the login endpoint returns it."""

    access_token: str
    expires_at: datetime
    expires_in: int
    token_type: str = "bearer"


@dataclass(frozen=True, slots=True)
class TestCredentials:
    """A test user `ensure_test_users` just created; the password and key are shown once."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    email: str
    password: str
    role: str
    api_key: str


def utc(moment: datetime) -> datetime:
    """`moment` with its time zone (SQLite gives timestamps back without one)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _new_key() -> tuple[str, str, str]:
    """A new API key: (plaintext, prefix, sha256 hex)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:PREFIX_LENGTH], _sha256(key)


class AuthService:
    """Users, API keys, tokens and the check every request goes through."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        *,
        hasher: PasswordHasher | None = None,
        cache_ttl: float = CACHE_TTL,
        touch_every: float = TOUCH_EVERY,
        shared: SharedAuth | None = None,
    ) -> None:
        """`sessions` must not expire objects on commit (`sparklio.db.engine.sessions` does
        not): the records this returns are read after their session closed. `hasher` is for
        tests that want cheaper argon2 parameters; `cache_ttl` and `touch_every` for tests
        that cannot wait for the clock (the next `last_used_at` write is a minute away).
        `shared` (REDIS_URL) shares revocations and login limits with other processes."""
        self.settings = settings
        self._sessions = sessions
        self._hasher = hasher or PasswordHasher()
        self._cache_ttl = cache_ttl
        self._cache: PrincipalCache[Principal] = PrincipalCache(cache_ttl, CACHE_SIZE)
        self._touch_every = touch_every
        self._touched: dict[str, float] = {}  # key id -> when last_used_at was last written
        # outages are logged once, not once per call or per key and minute
        self._touch_failing = False
        self._serving_stale = False
        self._shared = shared
        self._seen_version: int | None = None  # the shared revocation counter last read
        local = LocalLoginLimits(LOGIN_FAILURES, ADDRESS_FAILURES, LOGIN_WINDOW, CACHE_SIZE)
        self._limits: LoginLimits = local if shared is None else shared.login_limits(local)
        self._secret_value: str | None = None
        self._dummy_hash: str | None = None
        # sessions revoked while this process listened, until their tokens expire: refused
        # even while the database (which keeps every revocation) cannot be asked
        self._revoked_sessions: dict[str, float] = {}

    # -- authentication ----------------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization: Bearer <API key or token>` header."""
        credential = _bearer(authorization)
        digest = _sha256(credential)
        max_age = await self._check_revocations()
        moment = time.monotonic()
        principal = self._cache.get(digest, moment, max_age=max_age)
        if principal is None:
            generation = self._cache.generation
            until, hard = moment + self._cache_ttl, float("inf")
            try:
                if credential.startswith(KEY_PREFIX):
                    principal = await self._resolve_key(digest, credential[:PREFIX_LENGTH])
                else:
                    principal, expires = await self._resolve_token(credential)
                    hard = moment + expires - time.time()
                    until = min(until, hard)
            except GatewayError:
                raise
            except Exception as exc:
                # no user text reaches these queries (a digest, a signed token's subject), so
                # any database error means it cannot answer now, e.g. tables not migrated yet
                if not (is_outage(exc) or isinstance(exc, SQLAlchemyError)):
                    raise
                # the database is down: a credential it approved a moment ago stays good
                # (revocations in this process still apply), so model calls keep working
                principal = self._cache.get(digest, moment, stale=True)
                if principal is None and not credential.startswith(KEY_PREFIX):
                    principal = self._unchecked_token(credential)
                if principal is None:
                    raise DatabaseUnavailableError(
                        f"The database is unavailable ({type(exc).__name__}), so this "
                        "credential cannot be checked now; retry in a few seconds."
                    ) from exc
                if not self._serving_stale:
                    self._serving_stale = True
                    log.warning(
                        "database unavailable (%s: %s); serving credentials it approved before",
                        type(exc).__name__,
                        exc,
                    )
                return principal
            if self._serving_stale:
                self._serving_stale = False
                log.info("database available again; checking credentials there")
            self._cache.put(digest, principal, until, generation, hard)
        if principal.key_id is not None:
            await self._touch(principal.key_id, moment)
        return principal

    async def _check_revocations(self) -> float | None:
        """With shared state: drop the cache when another process revoked something since
        the last look. The longest a cached entry may be trusted: None for its TTL, shorter
        while Redis does not answer (another process's revocation could not be heard)."""
        shared = self._shared
        if shared is None:
            return None
        if not shared.listening:
            shared.listen(self._revoked_elsewhere)
        version = await shared.version()
        if version is None:
            return shared.degraded_ttl
        if self._seen_version is None or version > self._seen_version:
            if self._seen_version is not None:
                self._cache.clear()
            self._seen_version = version
        return None

    def _revoked_elsewhere(self, kind: str, ident: str) -> None:
        """A revocation announced by any process (this one included)."""
        if kind == "key":
            self._cache.drop(lambda p: p.key_id == ident)
        elif kind == "session":
            self._forget_session(ident, time.time() + self.settings.jwt_expiry_minutes * 60)
        else:
            self._cache.drop(lambda p: p.user_id == ident)

    async def aclose(self) -> None:
        """Stop listening for revocations and close the shared state's connections."""
        if self._shared is not None:
            await self._shared.aclose()

    async def _resolve_key(self, digest: str, prefix: str) -> Principal:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User)
                    .join(User, User.id == ApiKey.user_id)
                    .where(ApiKey.key_hash == digest)
                )
            ).first()
        if row is None:
            raise UnauthorizedError(
                f"API key {prefix}... is not known (was it copied whole?); {HOW_TO}"
            )
        key, user = row
        if key.revoked_at is not None:
            raise ForbiddenError(f"API key {key.prefix} was revoked; create a new one")
        if not user.active:
            raise ForbiddenError(f"User {user.email} is inactive; ask an admin to reactivate it")
        if key.last_used_at is not None and key.id not in self._touched:
            age = (now() - utc(key.last_used_at)).total_seconds()
            self._touched[key.id] = time.monotonic() - max(age, 0.0)
        return Principal(user.id, user.email, user.role, "key", key.id)

    async def _resolve_token(self, token: str) -> tuple[Principal, float]:
        """The token's principal and its expiry (a Unix time)."""
        claims = self._decode(token)
        session_id = claims.get("sid")
        async with self._sessions() as session:
            user = await session.get(User, claims["sub"])
            revoked = session_id is not None and (
                session_id in self._revoked_sessions
                or await session.get(RevokedSession, str(session_id)) is not None
            )
        if revoked:
            raise UnauthorizedError(f"This session was logged out; {LOG_IN_AGAIN}")
        if user is None:
            raise UnauthorizedError(f"The token's user no longer exists; {HOW_TO}")
        if not user.active:
            raise ForbiddenError(f"User {user.email} is inactive; ask an admin to reactivate it")
        # the token may narrow the user's role (a member token for an admin), never widen it
        role = "admin" if claims.get("role") == "admin" and user.role == "admin" else "member"
        expires = float(claims["exp"])
        sid = None if session_id is None else str(session_id)
        return Principal(user.id, user.email, role, "token", None, sid, expires), expires

    def _unchecked_token(self, token: str) -> Principal:
        """A token's principal without asking the database whether its user is still active,
        for while the database is down: the signature and expiry are checked; it acts as a
        member (what needs an admin needs the database anyway)."""
        claims = self._decode(token)
        sid = claims.get("sid")
        if sid is not None and str(sid) in self._revoked_sessions:
            raise UnauthorizedError(f"This session was logged out; {LOG_IN_AGAIN}")
        return Principal(claims["sub"], f"user {claims['sub']}", "member", "token",
                         None, None if sid is None else str(sid), float(claims["exp"]))  # fmt: skip

    def _decode(self, token: str) -> dict[str, Any]:
        login = LOG_IN_AGAIN
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._secret(),
                algorithms=["HS256"],
                options={"require": ["sub", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            raise UnauthorizedError(f"The token has expired; {login}") from None
        except jwt.InvalidSignatureError:
            raise UnauthorizedError(
                f"The token's signature is not valid (signed with another secret); {login}"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise UnauthorizedError(
                f"The credential is neither an API key nor a valid token ({exc}); {HOW_TO}"
            ) from None
        return claims

    async def _touch(self, key_id: str, moment: float) -> None:
        """Record that a key was used, at most once every `touch_every` seconds per key.
        Best effort: a call is never refused over it."""
        if moment - self._touched.get(key_id, float("-inf")) < self._touch_every:
            return
        if len(self._touched) >= CACHE_SIZE:
            cutoff = moment - self._touch_every
            self._touched = {k: t for k, t in self._touched.items() if t > cutoff}
        self._touched[key_id] = moment  # before the write, so concurrent requests skip it
        try:
            async with self._sessions.begin() as session:
                await session.execute(
                    update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=now())
                )
        except Exception as exc:
            # asyncpg's and the socket's errors escape SQLAlchemy while connecting (issue 10)
            if not self._touch_failing:
                self._touch_failing = True
                log.warning(
                    "could not record the use of API keys (%s: %s); calls are still served, "
                    "last_used_at is skipped until the database answers again",
                    type(exc).__name__,
                    exc,
                    exc_info=not (is_outage(exc) or isinstance(exc, SQLAlchemyError)),
                )
            return
        if self._touch_failing:
            self._touch_failing = False
            log.info("recording the use of API keys again")

    # -- tokens and logins -------------------------------------------------------------------

    def issue_token(
        self, user_id: str, role: str, *, expires_in: timedelta | None = None,
        session_id: str | None = None,
    ) -> Token:  # fmt: skip
        """A signed token for `user_id`; JWT_EXPIRY_MINUTES long unless `expires_in` is given.
        With `session_id` (a studio session's), `revoke_session` can end it early."""
        issued = now().replace(microsecond=0)
        lifetime = expires_in
        if lifetime is None:
            lifetime = timedelta(minutes=self.settings.jwt_expiry_minutes)
        expires = issued + lifetime
        claims = {
            "sub": user_id,
            "role": role,
            "iat": int(issued.timestamp()),
            "exp": int(expires.timestamp()),
        }
        if session_id is not None:
            claims["sid"] = session_id
        token = jwt.encode(claims, self._secret(), algorithm="HS256")
        return Token(token, expires, int(lifetime.total_seconds()))

    async def login(
        self, email: str, password: str, client: str, *, session: bool = False
    ) -> Token:
        """A token for the right email and password. Failed logins are limited per (account,
        client address) (LOGIN_FAILURES in LOGIN_WINDOW seconds) and per client address
        (ADDRESS_FAILURES): never per account alone, or anyone could lock its owner out.
        With `session`, the token is a studio session's, which `revoke_session` ends."""
        email = check_text("email", email.strip().lower(), MAX_EMAIL)
        check_text("password", password, MAX_PASSWORD, controls=True)
        address = address_key(client)
        # counted as failed up front, so concurrent attempts cannot slip past the limit
        wait, ticket = await self._limits.admit(email, address)
        if wait > 0:
            raise TooManyRequestsError(
                f"Too many failed logins from this address; try again in {max(1, round(wait))} s",
                retry_after=wait,
            )
        try:
            user = await self._user_if_password_right(email, password)
        except BaseException:  # not an answer about the password (e.g. the database is down)
            await asyncio.shield(self._limits.undo(email, address, ticket))
            raise
        if user is None:
            raise UnauthorizedError("email or password is wrong")
        await self._limits.succeeded(email, address, ticket)
        if not user.active:
            raise ForbiddenError(f"User {user.email} is inactive; ask an admin to reactivate it")
        return self.issue_token(user.id, user.role, session_id=new_id() if session else None)

    @_needs_database
    async def revoke_session(self, principal: Principal) -> None:
        """End the studio session `principal` came with: its token is refused from the next
        request, on every process (at once with REDIS_URL, else within CACHE_TTL)."""
        if principal.session_id is None:
            raise InvalidRequestError("These credentials are not a studio session's")
        expires = principal.expires_at or time.time() + self.settings.jwt_expiry_minutes * 60
        moment = now()
        async with self._sessions.begin() as session:
            await session.execute(delete(RevokedSession).where(RevokedSession.expires_at < moment))
            if await session.get(RevokedSession, principal.session_id) is None:
                session.add(RevokedSession(
                    id=principal.session_id, user_id=principal.user_id,
                    expires_at=datetime.fromtimestamp(expires, UTC), revoked_at=moment,
                ))  # fmt: skip
        self._forget_session(principal.session_id, expires)
        if self._shared is not None:
            await self._shared.revoked("session", principal.session_id)

    def _forget_session(self, session_id: str, expires: float) -> None:
        """Refuse the session in this process from now on (its cached principal too)."""
        moment = time.time()
        if len(self._revoked_sessions) >= CACHE_SIZE:
            self._revoked_sessions = {s: t for s, t in self._revoked_sessions.items() if t > moment}
        self._revoked_sessions[session_id] = expires
        self._cache.drop(lambda p: p.session_id == session_id)

    def mac(self, purpose: str, text: str) -> str:
        """An HMAC-SHA256 of `text` under the token secret, for `purpose` only (a value made
        for one purpose is no good for another): e.g. a session's CSRF token."""
        key = hmac.new(self._secret().encode(), purpose.encode(), hashlib.sha256).digest()
        return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

    @_needs_database
    async def _user_if_password_right(self, email: str, password: str) -> User | None:
        """The user when the password is right; None otherwise, in about the same time."""
        async with self._sessions() as session:
            user = await session.scalar(select(User).where(User.email == email))
        if user is None or user.password_hash.startswith(_UNUSABLE):
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash(secrets.token_urlsafe(16))
            await asyncio.to_thread(self._verify, self._dummy_hash, password)
            return None
        if not await asyncio.to_thread(self._verify, user.password_hash, password):
            return None
        if self._hasher.check_needs_rehash(user.password_hash):
            new_hash = await self._hash(password)
            async with self._sessions.begin() as session:
                await session.execute(
                    update(User).where(User.id == user.id).values(password_hash=new_hash)
                )
        return user

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def local_token(self, role: str = "admin") -> str:
        """A short-lived token for the built-in local user, for in-process CLI runs (trusted
        because they can read SPARKLIO_HOME)."""
        check_role(role)
        user = await self._local_user()
        if not user.active:
            raise ForbiddenError(f"The local user {LOCAL_EMAIL} is inactive")
        minutes = min(LOCAL_TOKEN_MINUTES, self.settings.jwt_expiry_minutes)
        return self.issue_token(user.id, role, expires_in=timedelta(minutes=minutes)).access_token

    @_needs_database
    async def _local_user(self) -> User:
        """The built-in local user (an admin whose password never verifies), made on demand."""
        query = select(User).where(User.email == LOCAL_EMAIL)
        async with self._sessions() as session:
            user = await session.scalar(query)
        if user is not None:
            return user
        try:
            async with self._sessions.begin() as session:
                user = User(
                    id=new_id(),
                    email=LOCAL_EMAIL,
                    password_hash=_UNUSABLE + secrets.token_urlsafe(16),
                    role="admin",
                )
                session.add(user)
            return user
        except IntegrityError:  # another process made it first
            async with self._sessions() as session:
                found = await session.scalar(query)
            assert found is not None
            return found

    def load_secret(self) -> None:
        """Read (or make) the JWT secret now, so a bad JWT_SECRET fails at start (ConfigError)
        rather than on the first request."""
        self._secret()

    def _secret(self) -> str:
        """JWT_SECRET, else the secret in SPARKLIO_HOME/jwt_secret (made on first use)."""
        if self._secret_value is None:
            configured = self.settings.jwt_secret
            if configured is not None:
                value = configured.get_secret_value()
                if len(value.encode()) < MIN_SECRET:
                    raise ConfigError(
                        f"JWT_SECRET is {len(value.encode())} bytes; use at least {MIN_SECRET}, "
                        "e.g. python -c 'import secrets; print(secrets.token_urlsafe(48))'"
                    )
                self._secret_value = value
            else:
                self._secret_value = _secret_file(self.settings.home / "jwt_secret")
        return self._secret_value

    # -- users and keys ----------------------------------------------------------------------

    @_needs_database
    async def create_user(self, email: str, password: str, role: str = "member") -> User:
        """A new active user. InvalidRequestError for a bad email, password or role."""
        email = check_email(email)
        check_password(password)
        check_role(role)
        password_hash = await self._hash(password)
        try:
            async with self._sessions.begin() as session:
                user = User(id=new_id(), email=email, password_hash=password_hash, role=role)
                session.add(user)
        except IntegrityError:
            raise InvalidRequestError(f"A user with email {email} already exists") from None
        return user

    @_needs_database
    async def set_active(self, user_id: str, active: bool) -> User:
        """(De)activate a user; an inactive user's keys and tokens stop working at once."""
        async with self._sessions.begin() as session:
            user = await session.get(User, user_id)
            if user is None:
                raise NotFoundError(f"No user {user_id}")
            user.active = active
        self._cache.drop(lambda p: p.user_id == user_id)
        if self._shared is not None and not active:
            await self._shared.revoked("user", user_id)
        return user

    @_needs_database
    async def create_api_key(self, user_id: str, name: str) -> tuple[str, ApiKey]:
        """A new key for `user_id`: (the key, shown only now, and its record)."""
        name = check_text("name", name.strip(), MAX_NAME)
        if not name:
            raise InvalidRequestError("name: give the key a name, e.g. laptop or ci")
        key, prefix, key_hash = _new_key()
        async with self._sessions.begin() as session:
            if await session.get(User, user_id) is None:
                raise NotFoundError(f"No user {user_id}")
            record = ApiKey(
                id=new_id(), user_id=user_id, name=name, prefix=prefix, key_hash=key_hash
            )
            session.add(record)
        return key, record

    @_needs_database
    async def list_api_keys(self, user_id: str) -> list[ApiKey]:
        """The user's keys, oldest first, revoked ones included."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at)
            )
            return list(rows)

    @_needs_database
    async def revoke_api_key(self, user_id: str, key_id: str, *, as_admin: bool = False) -> ApiKey:
        """Revoke a key of `user_id` (any key `as_admin`); it gets 403 from the next request."""
        check_text("key_id", key_id, 32)
        async with self._sessions.begin() as session:
            key = await session.get(ApiKey, key_id)
            if key is None or (key.user_id != user_id and not as_admin):
                raise NotFoundError(f"No API key {key_id} among yours")
            if key.revoked_at is None:
                key.revoked_at = now()
        self._cache.drop(lambda p: p.key_id == key_id)
        if self._shared is not None:
            await self._shared.revoked("key", key_id)
        return key

    @_needs_database
    async def ensure_test_users(self) -> list[TestCredentials]:
        """Create admin@ and member@sparklio.local, each with a random password and one key,
        unless they exist. Returns what it created (empty when both existed)."""
        created = []
        for email, role in TEST_USERS:
            async with self._sessions() as session:
                if await session.scalar(select(User.id).where(User.email == email)):
                    continue
            password = secrets.token_urlsafe(12)
            password_hash = await self._hash(password)
            key, prefix, key_hash = _new_key()
            try:
                async with self._sessions.begin() as session:
                    user = User(id=new_id(), email=email, password_hash=password_hash, role=role)
                    session.add(user)
                    await session.flush()
                    session.add(
                        ApiKey(
                            id=new_id(),
                            user_id=user.id,
                            name="test",
                            prefix=prefix,
                            key_hash=key_hash,
                        )
                    )
            except IntegrityError:  # another process made it first
                continue
            created.append(TestCredentials(email, password, role, key))
        return created


def _bearer(authorization: str | None) -> str:
    if not authorization or not authorization.strip():
        raise UnauthorizedError(f"No credentials: {HOW_TO}")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise UnauthorizedError(f"The Authorization header is malformed: {HOW_TO}")
    return credential


def _secret_file(path: Path) -> str:
    """The secret in `path`, written there (mode 0600) when the file does not exist yet."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        private_dir(path.parent)
        secret = secrets.token_urlsafe(48)
        # written whole under a temporary name and linked into place, so two processes
        # starting together never read a half-written file, and one of them wins
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(secret + "\n")
            os.link(temporary, path)
            log.info("generated a JWT secret in %s", path)
        except FileExistsError:
            secret = path.read_text(encoding="utf-8").strip()
        finally:
            temporary.unlink(missing_ok=True)
    if len(secret.encode()) < MIN_SECRET:
        raise ConfigError(f"{path} holds no usable secret; delete it to have a new one made")
    if path.stat().st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 it", path)
    return secret


__all__ = ["AuthService", "Principal", "TestCredentials", "Token", "utc"]


async def local_token_for(settings: Settings) -> str:
    """A local user's token for a process that is not the server but shares its
    SPARKLIO_HOME and database (the e2e script, a benchmark): trusted like the server."""
    engine = make_engine(database_url(settings))
    try:
        return await AuthService(settings, sessions(engine)).local_token()
    finally:
        await engine.dispose()
