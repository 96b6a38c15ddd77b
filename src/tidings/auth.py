"""Who is calling: producers (API keys), users (JWTs signed by their app), the admin (one shared token).

- API keys are random, shown once, and stored only as their SHA-256 hex; a lookup is by that hash.
- User JWTs are HS256 only, signed with the ``jwt_secret`` of the app their ``iss`` names, with ``aud`` =
  ``tidings``, and ``exp``, ``iss``, ``sub``, ``aud`` all required. ``iss`` is read unverified only to choose
  which secret to verify with; nothing else from the token is trusted before the signature is checked.
- The admin token is compared in constant time; with no token configured the admin routes answer 404.
- Rotation (``tidings apps rotate-key`` / ``rotate-secret``): the replaced key or secret is still accepted
  while the runtime clock is before its ``previous_*_until``, then never. A process caches app records for
  ``APP_CACHE_TTL`` seconds, so a rotation, a grace's end or a deletion made by another process takes effect
  there within that time; a token signed with a secret newer than the cached record re-reads the record at once.
Every failure is an ``AuthError`` whose message says what is wrong without echoing the credential, and
whose ``reason`` names the failed check (``tidings.errors.AUTH_REASONS``): ``token_expired`` and the rest.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

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


# How stale a process's view of an app may be: a deleted app's key or tokens, or a replaced credential whose
# grace was 0 or was cut short by a new rotation, keep working here at most this long (README, contract.md).
APP_CACHE_TTL = 5.0

Read = Callable[[], Coroutine[Any, Any, App | None]]  # one store read of an app record


class AppCache:
    """App records looked up recently, kept ``ttl`` seconds so a busy producer does not hit the store per
    request. A deleted app's key keeps working at most ``ttl`` seconds (a grace period's end is checked on
    every request, cached or not). Misses are not cached (a flood of wrong keys must not evict good ones); the
    size is bounded.

    Single flight: the callers that miss the same key while its read is under way wait for that read rather
    than each making one, so a reconnect storm of a cold app's clients takes one pooled connection for its
    row, not one per client (docs/reliability.md). The read runs on its own: a caller that gives up (a client
    gone) does not cancel it for the others; its failure is every waiting caller's, and nothing is cached."""

    def __init__(self, clock: Clock, ttl: float = APP_CACHE_TTL, max_entries: int = 4096) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, App]] = OrderedDict()
        self._reading: dict[str, tuple[int, asyncio.Task[App | None]]] = {}  # key -> (read number, read)
        self._reads = 0  # reads started so far; the next one is numbered ``_reads + 1``

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

    def mark(self) -> int:
        """The reads started so far: pass it as ``lookup``'s ``since`` to ask for a read started after now."""
        return self._reads

    async def lookup(self, key: str, read: Read, *, since: int | None = None) -> App | None:
        """The record under ``key``: cached, else from the read of it under way, else from a new ``read()``
        (cached when found). With ``since`` (a ``mark()``), only from a read started after that mark: a record
        at least as new as the caller's request (one signed with a secret rotated since the cached record)."""
        if since is None:
            app = self.get(key)
            if app is not None:
                return app
        loop = asyncio.get_running_loop()
        reading = self._reading.get(key)
        if reading is None or reading[0] <= (since or 0) or reading[1].get_loop() is not loop:
            self._reads += 1
            task = loop.create_task(read())
            reading = self._reading[key] = (self._reads, task)
            task.add_done_callback(functools.partial(self._read_done, key))
        return await asyncio.shield(reading[1])

    def _read_done(self, key: str, task: asyncio.Task[App | None]) -> None:
        app = None if task.cancelled() or task.exception() is not None else task.result()
        reading = self._reading.get(key)
        if reading is None or reading[1] is not task:
            return  # a newer read of the key replaced this one: its answer is the one to keep
        del self._reading[key]
        if app is not None:
            self.put(key, app)


def _looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


async def authenticate_producer(runtime: Runtime, api_key: str, cache: AppCache | None = None) -> App:
    key_hash = hash_key(api_key)
    read = functools.partial(runtime.store.apps.by_key_hash, key_hash)
    app = await (read() if cache is None else cache.lookup("key:" + key_hash, read))
    if app is None:
        if _looks_like_jwt(api_key):
            raise AuthError(
                "this route takes an API key (Bearer tdk_…), not a user token",
                reason=errors.WRONG_CREDENTIAL_KIND,
            )
        raise AuthError("invalid API key")
    if not key_accepted(app, key_hash, runtime.clock.time()):
        raise AuthError("invalid API key (it was rotated and its grace period is over)")
    return app


def key_accepted(app: App, key_hash: str, now: float) -> bool:
    """The current key always; the previous one while ``now`` is before its ``previous_key_until``."""
    if hmac.compare_digest(app.api_key_hash, key_hash):
        return True
    until = app.previous_key_until
    previous = app.previous_key_hash
    return (
        previous is not None and until is not None and now < until and hmac.compare_digest(previous, key_hash)
    )


def previous_secret(app: App, now: float) -> str | None:
    """The replaced JWT secret while its overlap lasts, else None."""
    until = app.previous_secret_until
    if app.previous_jwt_secret is None or until is None or now >= until:
        return None
    return app.previous_jwt_secret


async def _app_named(apps: Apps, name: str, cache: AppCache | None, since: int | None = None) -> App | None:
    read = functools.partial(apps.get, name)
    return await (read() if cache is None else cache.lookup("name:" + name, read, since=since))


def _unverified_issuer(token: str) -> str:
    """The ``iss`` of ``token``, read without the signature only to choose which secret verifies it."""
    if token.startswith("tdk_"):
        raise AuthError(
            "this route takes a user token (a JWT signed with the app's jwt_secret), not an API key",
            reason=errors.WRONG_CREDENTIAL_KIND,
        )
    peeked = _peek(token)
    if peeked is None:  # not the plain form: PyJWT's own reading decides (and words) the refusal
        peeked = _peek_with_pyjwt(token)
    header, claims = peeked
    if header.get("alg") != ALGORITHM:
        raise AuthError(f"token algorithm must be {ALGORITHM}", reason=errors.ALGORITHM_NOT_ALLOWED)
    issuer = claims.get("iss")
    if issuer is None:
        raise AuthError("the token has no iss claim (the app's name)", reason=errors.MISSING_CLAIM)
    if not isinstance(issuer, str) or not APP_NAME_RE.fullmatch(issuer):
        raise AuthError("the token's iss is not an app name", reason=errors.UNKNOWN_ISSUER)
    return issuer


def _peek_with_pyjwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise AuthError("malformed token: not a JWT", reason=errors.MALFORMED_TOKEN) from exc
    return header, claims


_SEGMENT_RE = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_HEADER = frozenset(("alg", "typ"))


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The header and claims of ``token`` in one cheap reading, when it is a JWT in the plain form: three
    canonical unpadded base64url segments, a header of ``alg`` (and ``typ``) only, JSON objects. Each of those
    PyJWT reads the same way (its reading checks the base64 a character at a time in Python, ~4x this), so the
    choice of secret is the same; None for anything else, which then goes through PyJWT (``_peek_with_pyjwt``).
    Nothing read here is trusted: ``_decoded`` verifies the token in full."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    head, body, signature = (_segment(part) for part in parts)
    if head is None or body is None or signature is None:
        return None
    try:
        header, claims = json.loads(head), json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict) or not header.keys() <= _PLAIN_HEADER:
        return None
    return header, claims


def _segment(part: str) -> bytes | None:
    """The bytes of a canonical unpadded base64url segment, else None."""
    if len(part) % 4 == 1 or not _SEGMENT_RE.fullmatch(part):
        return None
    data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=") != part.encode():
        return None  # stray bits in the last character: PyJWT refuses the segment
    return data


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


def _verified_claims(token: str, app: App, now: float) -> dict[str, Any]:
    """Verified with the app's secret, or with the previous one during a rotation's overlap."""
    try:
        return _decoded(token, app.name, app.jwt_secret)
    except jwt.InvalidSignatureError as exc:
        previous = previous_secret(app, now)
        if previous is None:
            raise _refusal(exc) from exc
    except jwt.PyJWTError as exc:
        raise _refusal(exc) from exc
    try:
        return _decoded(token, app.name, previous)
    except jwt.PyJWTError as exc:
        raise _refusal(exc) from exc


@functools.lru_cache(maxsize=1024)
def _prepared_secret(secret: str | bytes) -> bytes:
    return _HMAC_SHA256.prepare_key(secret)


class _CachedHS256(HMACAlgorithm):
    """PyJWT's HS256, with each app secret prepared once rather than per token: PyJWT checks that an HMAC
    secret is not an asymmetric key (PEM, SSH, DER and JWK parse attempts, each refusal an exception), a fifth
    of a token's verification. The checks are the same; a secret they refuse is refused every time."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def prepare_key(self, key: str | bytes) -> bytes:
        return _prepared_secret(key)


_HMAC_SHA256 = HMACAlgorithm(HMACAlgorithm.SHA256)
_JWT = jwt.PyJWT()
_JWT._jws.unregister_algorithm(ALGORITHM)
_JWT._jws.register_algorithm(ALGORITHM, _CachedHS256())


def _decoded(token: str, issuer: str, secret: str) -> dict[str, Any]:
    claims: dict[str, Any] = _JWT.decode(
        token,
        secret,
        algorithms=[ALGORITHM],
        audience=AUDIENCE,
        issuer=issuer,
        # Times are checked by ``_check_times`` against the runtime's clock, like every other deadline.
        options={
            "require": ["exp", "iss", "sub", "aud"],
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        },
    )
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
    """The app and user id of a valid user JWT, or ``AuthError``. The API's user routes use it."""
    app, user, _expires_at = await authenticate_user_until(runtime, token, cache)
    return app, user


async def authenticate_user_until(
    runtime: Runtime, token: str, cache: AppCache | None = None
) -> tuple[App, str, float]:
    """The app, the user id and the ``exp`` of a valid user JWT, or ``AuthError``: one verification gives the
    gateway (WS and SSE) both who connects and until when (the connection's lifetime)."""
    issuer, now = _unverified_issuer(token), runtime.clock.time()
    since = cache.mark() if cache is not None else None
    app = await _app_named(runtime.store.apps, issuer, cache)
    if app is None:  # the same answer as a bad signature: app names are not probed
        raise AuthError("the signature does not verify", reason=errors.BAD_SIGNATURE)
    try:
        claims = _verified_claims(token, app, now)
    except AuthError as exc:
        if since is None or exc.reason != errors.BAD_SIGNATURE:
            raise
        # The secret may have been rotated since the record was read (cached, or a read shared with callers that
        # came earlier): read it again, once, with a read started after this request arrived.
        app = await _app_named(runtime.store.apps, issuer, cache, since)
        if app is None:
            raise
        claims = _verified_claims(token, app, now)
    _check_times(claims, now)
    sub = claims.get("sub")
    if not isinstance(sub, str) or not 0 < len(sub) <= MAX_USER_ID or _has_control_chars(sub):
        raise AuthError("token sub must be a user id of 1 to 255 characters", reason=errors.INVALID_CLAIM)
    return app, sub, float(claims["exp"])


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


async def rotate_key(store: Store, name: str, grace: float, now: float) -> dict[str, object]:
    """A new API key for ``name`` (returned, the only time it is visible); the old one works ``grace`` more
    seconds. Raises ``NotFoundError`` for an unknown app."""
    api_key = new_api_key()
    if not await store.apps.rotate_key(name, hash_key(api_key), now + grace):
        raise NotFoundError(f"no app named {name!r}")
    return {"app": name, "api_key": api_key, "previous_key_until": now + grace}


async def rotate_secret(store: Store, name: str, grace: float, now: float) -> dict[str, object]:
    """A new JWT secret for ``name``; tokens signed with the old one are accepted ``grace`` more seconds."""
    jwt_secret = new_jwt_secret()
    if not await store.apps.rotate_secret(name, jwt_secret, now + grace):
        raise NotFoundError(f"no app named {name!r}")
    return {"app": name, "jwt_secret": jwt_secret, "previous_secret_until": now + grace}


def app_summary(app: App, now: float) -> dict[str, object]:
    """What may be shown of an app: never a key hash or a secret. A rotation is in progress while its
    previous credential is still accepted."""
    key_until = app.previous_key_until if key_in_grace(app, now) else None
    secret_until = app.previous_secret_until if previous_secret(app, now) is not None else None
    return {
        "app": app.name,
        "origins": list(app.origins),
        "created_at": app.created_at,
        "previous_key_until": key_until,
        "previous_secret_until": secret_until,
    }


def key_in_grace(app: App, now: float) -> bool:
    until = app.previous_key_until
    return app.previous_key_hash is not None and until is not None and now < until


def _has_control_chars(value: str) -> bool:
    """Control characters (NUL included) are refused in ids: not every backend can store them."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
