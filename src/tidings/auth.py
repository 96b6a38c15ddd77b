"""Who is calling: producers (API keys), users (JWTs signed by their app), the admin (one shared token).

- API keys are random, shown once, and stored only as their SHA-256 hex; a lookup is by that hash.
- User JWTs are HS256 only, signed with the ``jwt_secret`` of the app their ``iss`` names, with ``aud`` =
  ``tidings``, and ``exp``, ``iss``, ``sub``, ``aud`` all required. ``iss`` is read unverified only to choose
  which secret to verify with; nothing else from the token is trusted before the signature is checked.
- The admin token is compared in constant time; with no token configured the admin routes answer 404.
Every failure is an ``AuthError`` whose message says what is wrong without echoing the credential, and
whose ``reason`` names the failed check (``tidings.errors.AUTH_REASONS``): ``token_expired`` and the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections import OrderedDict
from typing import Any

import jwt

from tidings import errors
from tidings.core.clock import Clock
from tidings.core.models import App
from tidings.errors import AuthError, InvalidInputError, NotFoundError
from tidings.ports import Apps, Store
from tidings.runtime import Runtime

AUDIENCE = "tidings"
ALGORITHM = "HS256"
MAX_USER_ID = 255
APP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# An origin as browsers send it: scheme://host[:port], nothing else (no path, no trailing slash).
ORIGIN_RE = re.compile(r"^(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([0-9]{1,5}))?$")
_BEARER_RE = re.compile(r"^Bearer +([\x21-\x7e]{1,8192})$", re.IGNORECASE)


def new_api_key() -> str:
    return "tdk_" + secrets.token_urlsafe(32)


def new_jwt_secret() -> str:
    return secrets.token_urlsafe(48)


def hash_key(key: str) -> str:
    """SHA-256 hex: how API keys and stream tickets are stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def bearer(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer <credential>`` header, or ``AuthError``."""
    match = _BEARER_RE.fullmatch(authorization or "")
    if match is None:
        raise AuthError("missing or malformed Authorization: Bearer header")
    return match.group(1)


class AppCache:
    """App records looked up recently, kept ``ttl`` seconds so a busy producer does not hit the store per
    request. A rotated or deleted key keeps working at most ``ttl`` seconds. Misses are not cached (a flood of
    wrong keys must not evict good ones); the size is bounded."""

    def __init__(self, clock: Clock, ttl: float = 5.0, max_entries: int = 4096) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, App]] = OrderedDict()

    def get(self, key: str) -> App | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock.monotonic():
            self._entries.pop(key, None)
            return None
        return entry[1]

    def put(self, key: str, app: App) -> None:
        self._entries[key] = (self._clock.monotonic() + self._ttl, app)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)


def _looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


async def authenticate_producer(runtime: Runtime, api_key: str, cache: AppCache | None = None) -> App:
    key_hash = hash_key(api_key)
    app = cache.get("key:" + key_hash) if cache is not None else None
    if app is None:
        app = await runtime.store.apps.by_key_hash(key_hash)
        if app is None:
            if _looks_like_jwt(api_key):
                raise AuthError(
                    "this route takes an API key (Bearer tdk_…), not a user token",
                    reason=errors.WRONG_CREDENTIAL_KIND,
                )
            raise AuthError("invalid API key")
        if cache is not None:
            cache.put("key:" + key_hash, app)
    return app


async def _app_named(apps: Apps, name: str, cache: AppCache | None) -> App | None:
    app = cache.get("name:" + name) if cache is not None else None
    if app is None:
        app = await apps.get(name)
        if app is not None and cache is not None:
            cache.put("name:" + name, app)
    return app


def _unverified_issuer(token: str) -> str:
    if token.startswith("tdk_"):
        raise AuthError(
            "this route takes a user token (a JWT signed with the app's jwt_secret), not an API key",
            reason=errors.WRONG_CREDENTIAL_KIND,
        )
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError("malformed token: not a JWT", reason=errors.MALFORMED_TOKEN) from exc
    if header.get("alg") != ALGORITHM:
        raise AuthError(f"token algorithm must be {ALGORITHM}", reason=errors.ALGORITHM_NOT_ALLOWED)
    issuer = claims.get("iss")
    if issuer is None:
        raise AuthError("the token has no iss claim (the app's name)", reason=errors.MISSING_CLAIM)
    if not isinstance(issuer, str) or not APP_NAME_RE.fullmatch(issuer):
        raise AuthError("the token's iss is not an app name", reason=errors.UNKNOWN_ISSUER)
    return issuer


# PyJWT's refusals, most specific first, as (exception class, reason, message).
_JWT_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str, str], ...] = (
    (jwt.InvalidSignatureError, errors.BAD_SIGNATURE, "the signature does not verify"),
    (jwt.InvalidAlgorithmError, errors.ALGORITHM_NOT_ALLOWED, f"token algorithm must be {ALGORITHM}"),
    (jwt.InvalidAudienceError, errors.WRONG_AUDIENCE, f"the token's aud must be {AUDIENCE!r}"),
    (jwt.InvalidIssuerError, errors.UNKNOWN_ISSUER, "the token's iss does not name this app"),
    (jwt.DecodeError, errors.MALFORMED_TOKEN, "malformed token"),
)


def _refusal(exc: jwt.PyJWTError) -> AuthError:
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthError(f"the token has no {exc.claim} claim", reason=errors.MISSING_CLAIM)
    for cls, reason, message in _JWT_REFUSALS:
        if isinstance(exc, cls):
            return AuthError(message, reason=reason)
    return AuthError("the token's claims are invalid", reason=errors.INVALID_CLAIM)


def _verified_claims(token: str, app: App) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            app.jwt_secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=app.name,
            # Times are checked by ``_check_times`` against the runtime's clock, like every other deadline.
            options={
                "require": ["exp", "iss", "sub", "aud"],
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError as exc:
        raise _refusal(exc) from exc
    return claims


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_times(claims: dict[str, Any], now: float) -> None:
    """``exp`` must be a number of seconds in the future; ``nbf``, when present, not in the future."""
    exp, nbf = claims["exp"], claims.get("nbf")
    if not _is_time(exp) or (nbf is not None and not _is_time(nbf)):
        raise AuthError("the token's exp and nbf must be numbers of seconds", reason=errors.INVALID_CLAIM)
    if exp <= now:
        raise AuthError("token expired: mint a new one", reason=errors.TOKEN_EXPIRED)
    if nbf is not None and nbf > now:
        raise AuthError("token not valid yet (nbf is in the future)", reason=errors.TOKEN_NOT_YET_VALID)


async def authenticate_user(runtime: Runtime, token: str, cache: AppCache | None = None) -> tuple[App, str]:
    """The app and user id of a valid user JWT, or ``AuthError``. The gateway uses it for WS and SSE."""
    app = await _app_named(runtime.store.apps, _unverified_issuer(token), cache)
    if app is None:  # the same answer as a bad signature: app names are not probed
        raise AuthError("the signature does not verify", reason=errors.BAD_SIGNATURE)
    claims = _verified_claims(token, app)
    _check_times(claims, runtime.clock.time())
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_USER_ID or _has_control_chars(sub):
        raise AuthError("token sub must be a user id of 1 to 255 characters", reason=errors.INVALID_CLAIM)
    return app, sub


def check_admin(admin_token: str, authorization: str | None) -> None:
    """Raises ``NotFoundError`` when admin routes are off, ``AuthError`` for a wrong or missing token."""
    if not admin_token:
        raise NotFoundError("not found")
    if not hmac.compare_digest(bearer(authorization).encode(), admin_token.encode()):
        raise AuthError("invalid admin token")


def mint_user_token(app: App, user: str, ttl: float, now: float) -> str:
    """A user JWT as an app's backend would sign it (for ``tidings token``, demos and tests)."""
    claims = {"iss": app.name, "sub": user, "aud": AUDIENCE, "iat": int(now), "exp": int(now + ttl)}
    return jwt.encode(claims, app.jwt_secret, algorithm=ALGORITHM)


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, or ``ValueError``."""
    lowered = origin.strip().lower()
    match = ORIGIN_RE.fullmatch(lowered)
    if match is None or (match.group(3) is not None and not 0 < int(match.group(3)) < 65536):
        raise ValueError("an origin is scheme://host[:port] (http or https), without path or trailing slash")
    return lowered


def validate_app_name(name: str) -> str:
    if not APP_NAME_RE.fullmatch(name):
        raise InvalidInputError("an app name is 1-64 of a-z 0-9 _ - starting with a letter or digit")
    return name


async def create_app_record(store: Store, name: str, origins: list[str], now: float) -> dict[str, str]:
    """Creates an app with fresh credentials; returns ``{"app", "api_key", "jwt_secret"}``, the only time the
    API key is ever visible. Raises ``InvalidInputError`` for a bad name or origin, ``AppExistsError``."""
    try:
        normalized = tuple(dict.fromkeys(normalize_origin(origin) for origin in origins))
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    api_key, jwt_secret = new_api_key(), new_jwt_secret()
    app = App(validate_app_name(name), hash_key(api_key), jwt_secret, normalized, now)
    await store.apps.create(app)
    from tidings.sender import new_vapid_pair  # the app's Web Push key pair (made lazily for older apps)

    await store.outbound.vapid(app.name, new_vapid_pair, now)
    return {"app": app.name, "api_key": api_key, "jwt_secret": jwt_secret}


def _has_control_chars(value: str) -> bool:
    """Control characters (NUL included) are refused in ids: not every backend can store them."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
