"""Mobile push through Firebase Cloud Messaging, HTTP v1 API.

Auth: an OAuth2 access token made from a service-account key (google-auth's ``service_account.Credentials``
with the ``firebase.messaging`` scope), cached until google-auth says it expired, refreshed once at a time in a
worker thread (google-auth's refresh is synchronous; its transport here is a small httpx adapter, so the
``requests`` package is not needed). google-auth is the optional extra ``fcm``: it is imported lazily, and a
missing extra is a clear error at construction. The token endpoint (the key's ``token_uri``) and the API base
URL are configurable so tests point them at local stand-ins. Both are Google's, fixed by the operator, so they do
not go through the egress guard.

One send: ``POST {api_base}/v1/projects/{project}/messages:send`` with ``{"message": {"token", "notification":
{"title", "body"}, "data": {string values}, "android": {"priority", "collapse_key", "ttl"}, "apns": {"headers":
{"apns-priority", "apns-collapse-id", "apns-expiration"}}}}``. Priority high -> Android HIGH / APNs 10, else
NORMAL / 5; replace_key -> collapse key (hashed to fit APNs' 64 bytes). ``data`` carries ``id``, ``type``,
``seq``, ``count`` and ``notification`` (the JSON text, left out when over 3000 bytes: FCM refuses messages over
4 KB, and the app can fetch the notification by id) so the app can render it itself.

Answers: 200 sent; 404, or an ``UNREGISTERED`` error, or ``INVALID_ARGUMENT`` about ``message.token``: gone;
401 (the token was revoked): the cached token is dropped, retry; 429, 500, 503: retry (Retry-After honoured);
other errors failed. APNs direct (token-based .p8 auth, HTTP/2 to Apple) is not in scope: iOS devices are
reached through FCM's APNs bridge.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from tidings.channels.base import ChannelName, DeviceTarget, Message, Outcome, bounded, parse_retry_after

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
API_BASE = "https://fcm.googleapis.com"
MAX_DATA_JSON = 3000
EXTRA_HINT = "the FCM channel needs the 'fcm' extra: pip install 'tidings[fcm]' (google-auth)"


def _google() -> Any:
    try:
        from google.oauth2 import service_account
    except ImportError:
        raise RuntimeError(EXTRA_HINT) from None
    return service_account


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status = response.status_code
        self.headers = dict(response.headers)
        self.data = response.content


class HttpxRequest:
    """google-auth's transport ``Request`` (the callable its refresh uses), over a synchronous httpx client."""

    def __init__(self, verify: bool | ssl.SSLContext = True, timeout: float = 15.0) -> None:
        self._client = httpx.Client(verify=verify, timeout=timeout, trust_env=False, follow_redirects=False)

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        from google.auth.exceptions import TransportError

        try:
            limit = httpx.Timeout(timeout) if timeout else self._client.timeout
            return _Response(self._client.request(method, url, content=body, headers=headers, timeout=limit))
        except httpx.HTTPError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._client.close()


def collapse_id(replace_key: str) -> str:
    return hashlib.sha256(replace_key.encode()).hexdigest()[:32]


def headline(note: Mapping[str, Any], count: int) -> tuple[str, str]:
    if count > 1:
        return f"{count} new notifications", ""
    data = note.get("data") or {}
    actors = note.get("actors") or [{}]
    actor = actors[0] if isinstance(actors[0], dict) else {}
    title = (
        data.get("title") or f"{actor.get('name') or actor.get('id') or 'Someone'}: {note.get('type', '')}"
    )
    return str(title), str(data.get("body") or "")


def v1_message(message: Message, target: DeviceTarget) -> dict[str, Any]:
    note = message.notifications[0]
    count = len(message.notifications)
    title, body = headline(note, count)
    high = message.priority == "high"
    android: dict[str, Any] = {"priority": "HIGH" if high else "NORMAL", "ttl": f"{max(0, message.ttl)}s"}
    apns_headers = {"apns-priority": "10" if high else "5"}
    if message.replace_key:
        android["collapse_key"] = collapse_id(message.replace_key)
        apns_headers["apns-collapse-id"] = collapse_id(message.replace_key)
    data = {
        "id": str(note.get("id", "")),
        "type": str(note.get("type", "")),
        "seq": str(note.get("seq", "")),
        "count": str(count),
    }
    text = orjson.dumps(note).decode()
    if len(text.encode()) <= MAX_DATA_JSON:  # FCM refuses a message over 4 KB: then the app fetches it by id
        data["notification"] = text
    notification = {"title": title, "body": body} if body else {"title": title}
    return {
        "message": {
            "token": target.token,
            "notification": notification,
            "data": data,
            "android": android,
            "apns": {"headers": apns_headers},
        }
    }


def _error(body: bytes) -> tuple[str, str, str]:
    """(status, FCM errorCode, message + field violations) of an error answer, empty when unreadable."""
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return "", "", ""
    codes, fields = "", []
    for item in error.get("details") or []:
        if isinstance(item, dict):
            codes = codes or str(item.get("errorCode", ""))
            fields += [
                str(v.get("field", "")) for v in item.get("fieldViolations") or [] if isinstance(v, dict)
            ]
    return str(error.get("status", "")), codes, " ".join([str(error.get("message", "")), *fields])


def verdict(response: httpx.Response, masked: tuple[str, ...]) -> Outcome:
    status = response.status_code
    body = response.content[:4096]
    detail = bounded(f"HTTP {status}: {body.decode('utf-8', 'replace')}", masked)
    if status == 200:
        return Outcome("sent", status, detail)
    err_status, code, text = _error(body)
    if status == 404 or code == "UNREGISTERED":
        return Outcome("gone", status, detail)
    if err_status == "INVALID_ARGUMENT" and ("message.token" in text or "registration token" in text.lower()):
        return Outcome("gone", status, detail)
    if status == 429 or status >= 500:
        return Outcome("retry", status, detail, parse_retry_after(response.headers.get("retry-after")))
    return Outcome("failed", status, detail)


class FcmChannel:
    """Sends messages whose target is a :class:`DeviceTarget`. ``service_account``: the key file's JSON."""

    name: ChannelName = "mobile_push"

    def __init__(
        self,
        service_account: Mapping[str, Any] | str,
        *,
        api_base: str = API_BASE,
        token_uri: str | None = None,
        verify: bool | ssl.SSLContext = True,
        timeout: float = 15.0,
    ) -> None:
        info = dict(orjson.loads(service_account) if isinstance(service_account, str) else service_account)
        key = str(info.get("private_key", ""))
        self._masked = (key, *[line for line in key.splitlines() if len(line) >= 16])
        if token_uri:
            info["token_uri"] = token_uri
        try:
            self._credentials = _google().Credentials.from_service_account_info(info, scopes=[SCOPE])
        except (ValueError, KeyError) as exc:
            raise ValueError(bounded(f"unusable service-account key: {exc}", self._masked)) from None
        self._project = str(info.get("project_id", ""))
        self._url = f"{api_base.rstrip('/')}/v1/projects/{self._project}/messages:send"
        self._auth_request = HttpxRequest(verify=verify, timeout=timeout)
        self._client = httpx.AsyncClient(
            verify=verify, timeout=timeout, trust_env=False, follow_redirects=False
        )
        self._lock = asyncio.Lock()

    async def _token(self) -> str:
        async with self._lock:
            if not self._credentials.valid:
                await asyncio.to_thread(self._credentials.refresh, self._auth_request)
            return str(self._credentials.token)

    async def send(self, message: Message) -> Outcome:
        target = message.target
        if not isinstance(target, DeviceTarget):
            raise TypeError(f"FCM channel got a {type(target).__name__}")
        from google.auth.exceptions import GoogleAuthError

        try:
            token = await self._token()
        except GoogleAuthError as exc:
            return Outcome("retry", detail=bounded(f"cannot get an FCM access token: {exc}", self._masked))
        masked = (*self._masked, token)
        headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
        try:
            response = await self._client.post(
                self._url, content=orjson.dumps(v1_message(message, target)), headers=headers
            )
        except httpx.HTTPError as exc:
            return Outcome("retry", detail=bounded(f"{type(exc).__name__}: {exc}", masked))
        if response.status_code == 401:
            self._credentials.token = None  # revoked or expired early: fetch a new one next time
            return Outcome("retry", 401, bounded(f"HTTP 401: {response.text[:1000]}", masked))
        return verdict(response, masked)

    async def close(self) -> None:
        await self._client.aclose()
        self._auth_request.close()
