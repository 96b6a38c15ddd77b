"""The producer SDK: your backend sends events, manages topic subscribers, users' profiles and webhooks.

    async with ProducerClient("http://127.0.0.1:8080", api_key) as tidings:
        event_id = await tidings.send({"type": "post.liked", "actor": {"id": "bob"}, "recipients": ["alice"]})

Every event goes out with an ``Idempotency-Key`` (one is generated when the caller gives none), so the
client's own retries after a lost answer or a timeout never create an event twice: the server answers a
repeat with the first event's id. Give your own key (e.g. derived from your database row) to make retries
across process restarts safe too. Every other request is safe to repeat (PUT, DELETE, GET, and the
retractions, which are idempotent) except ``create_webhook``, which is tried once.

The life of a notification: send with ``cancel_key`` (e.g. ``"like:bob:post42"``) and ``cancel`` it by that key
when the action is undone (an unlike), or ``retract`` one event by its id; the notification then leaves every
inbox and every live list. ``erase_user`` and ``export_user`` answer a user's data requests.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from tidings.client.http import USER_AGENT, AsyncApi, SyncApi
from tidings.client.retry import Backoff

Event = Mapping[str, Any]
BatchResult = dict[str, Any]  # {"id": ..., "status": "accepted"} or {"error": {"code": ..., "message": ...}}


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _batch_body(events: Sequence[Event]) -> dict[str, Any]:
    """Each item keeps its own ``idempotency_key`` or gets a new one, so resending the batch is safe."""
    return {
        "events": [
            {**event, "idempotency_key": event.get("idempotency_key") or new_idempotency_key()}
            for event in events
        ]
    }


def _event_body(event: Event, cancel_key: str | None, ordering_key: str | None) -> dict[str, Any]:
    """The event with the keys given as arguments (they win over the same keys in ``event``)."""
    body = dict(event)
    if cancel_key is not None:
        body["cancel_key"] = cancel_key
    if ordering_key is not None:
        body["ordering_key"] = ordering_key
    return body


def _cancel_body(cancel_keys: Sequence[str]) -> dict[str, Any]:
    if isinstance(cancel_keys, str) or not cancel_keys:
        raise TypeError("cancel_keys is a non-empty sequence of keys, not one string")
    return {"cancel_keys": list(cancel_keys)}


def _event_path(event_id: str) -> str:
    return f"/v1/events/{quote(event_id, safe='')}"


def _subscriber_path(topic: str, user_id: str) -> str:
    return f"/v1/topics/{quote(topic, safe='')}/subscribers/{quote(user_id, safe='')}"


def _user_path(user_id: str) -> str:
    return f"/v1/users/{quote(user_id, safe='')}"


def _profile(**fields: str | None) -> dict[str, str]:
    """The profile body: the fields given (a left-out field is cleared: PUT replaces the whole profile)."""
    return {name: value for name, value in fields.items() if value is not None}


def _webhook_body(url: str, events: Sequence[str]) -> dict[str, Any]:
    if isinstance(events, str):
        raise TypeError("events is a sequence of event types, not one string")
    return {"url": url, "events": list(events)}


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}


class ProducerClient:
    """Async producer client (httpx). Close it with ``aclose()`` or use it as an async context manager."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        backoff: Backoff | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
        random: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
            trust_env=trust_env,
        )
        self._api = AsyncApi(http, backoff or Backoff(), random=random, sleep=sleep)

    async def __aenter__(self) -> ProducerClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._api.http.aclose()

    async def send(
        self,
        event: Event,
        idempotency_key: str | None = None,
        *,
        cancel_key: str | None = None,
        ordering_key: str | None = None,
    ) -> str:
        """Sends one event; returns its id once the server holds it durably (202). ``cancel_key``: a handle to
        ``cancel`` it by later; ``ordering_key``: events with the same key reach each user in send order."""
        key = idempotency_key or new_idempotency_key()
        body = _event_body(event, cancel_key, ordering_key)
        answer = await self._api.request("POST", "/v1/events", json=body, headers={"Idempotency-Key": key})
        return str(answer["id"])

    async def cancel(self, cancel_keys: Sequence[str]) -> dict[str, Any]:
        """Retracts every event sent with one of ``cancel_keys`` (``POST /v1/events/cancel``), whatever stage
        it is at: never delivered, or removed from inboxes and live lists. Idempotent."""
        answer: dict[str, Any] = await self._api.request(
            "POST", "/v1/events/cancel", json=_cancel_body(cancel_keys)
        )
        return answer

    async def retract(self, event_id: str) -> dict[str, Any]:
        """Retracts one event by the id ``send`` returned (``DELETE /v1/events/{id}``). Idempotent."""
        answer = await self._api.request("DELETE", _event_path(event_id))
        return dict(answer or {})

    async def erase_user(self, user_id: str) -> dict[str, Any]:
        """Erases everything held about ``user_id`` (``DELETE /v1/users/{id}``). Idempotent."""
        answer = await self._api.request("DELETE", _user_path(user_id))
        return dict(answer or {})

    async def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything held about ``user_id``, as JSON (``GET /v1/users/{id}/export``)."""
        answer: dict[str, Any] = await self._api.request("GET", _user_path(user_id) + "/export")
        return answer

    async def send_batch(self, events: Sequence[Event]) -> list[BatchResult]:
        """Sends many events in one request; one result per event, in order (each succeeds or fails alone)."""
        answer = await self._api.request("POST", "/v1/events/batch", json=_batch_body(events))
        results: list[BatchResult] = answer["results"]
        return results

    async def subscribe(self, topic: str, user_id: str) -> bool:
        """Adds ``user_id`` to ``topic``'s subscribers; returns whether that changed anything."""
        answer = await self._api.request("PUT", _subscriber_path(topic, user_id))
        return bool(answer["changed"])

    async def unsubscribe(self, topic: str, user_id: str) -> bool:
        answer = await self._api.request("DELETE", _subscriber_path(topic, user_id))
        return bool(answer["changed"])

    async def put_user(
        self,
        user_id: str,
        *,
        email: str | None = None,
        locale: str | None = None,
        time_zone: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Sets ``user_id``'s profile, replacing it: the email channel's address, locale, time zone, name."""
        body = _profile(email=email, locale=locale, time_zone=time_zone, name=name)
        answer: dict[str, Any] = await self._api.request("PUT", _user_path(user_id), json=body)
        return answer

    async def create_webhook(self, url: str, events: Sequence[str] = ()) -> dict[str, Any]:
        """Adds a webhook endpoint for ``events`` (event types; none: all). The answer's ``secret`` (``whsec_…``)
        is shown only now. Tried once: repeating it after a lost answer would add a second endpoint, so after
        a ``ConnectionFailedError`` look at ``webhooks()`` before trying again."""
        answer: dict[str, Any] = await self._api.request(
            "POST", "/v1/webhooks", json=_webhook_body(url, events), retry=False
        )
        return answer

    async def webhooks(self) -> list[dict[str, Any]]:
        """The app's webhook endpoints (without their secrets)."""
        answer = await self._api.request("GET", "/v1/webhooks")
        items: list[dict[str, Any]] = answer["items"]
        return items

    async def subscribers(self, topic: str, *, page_size: int = 100) -> AsyncIterator[str]:
        """Every subscriber of ``topic``, in user-id order, fetched a page at a time."""
        cursor: str | None = None
        while True:  # bounded by the topic's size: each page moves the cursor forward
            params: dict[str, str | int] = {"limit": page_size}
            if cursor is not None:
                params["cursor"] = cursor
            page = await self._api.request(
                "GET", f"/v1/topics/{quote(topic, safe='')}/subscribers", params=params
            )
            for user in page["items"]:
                yield str(user)
            cursor = page["next"]
            if cursor is None:
                return


class SyncProducerClient:
    """``ProducerClient`` for blocking code (scripts, WSGI apps, Celery tasks)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        backoff: Backoff | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        trust_env: bool = True,
        random: Callable[[], float] = random.random,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        http = httpx.Client(
            base_url=base_url,
            headers=_headers(api_key),
            timeout=timeout,
            transport=transport,
            trust_env=trust_env,
        )
        self._api = SyncApi(http, backoff or Backoff(), random=random, sleep=sleep)

    def __enter__(self) -> SyncProducerClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._api.http.close()

    def send(
        self,
        event: Event,
        idempotency_key: str | None = None,
        *,
        cancel_key: str | None = None,
        ordering_key: str | None = None,
    ) -> str:
        key = idempotency_key or new_idempotency_key()
        body = _event_body(event, cancel_key, ordering_key)
        answer = self._api.request("POST", "/v1/events", json=body, headers={"Idempotency-Key": key})
        return str(answer["id"])

    def cancel(self, cancel_keys: Sequence[str]) -> dict[str, Any]:
        answer: dict[str, Any] = self._api.request(
            "POST", "/v1/events/cancel", json=_cancel_body(cancel_keys)
        )
        return answer

    def retract(self, event_id: str) -> dict[str, Any]:
        answer = self._api.request("DELETE", _event_path(event_id))
        return dict(answer or {})

    def erase_user(self, user_id: str) -> dict[str, Any]:
        answer = self._api.request("DELETE", _user_path(user_id))
        return dict(answer or {})

    def export_user(self, user_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._api.request("GET", _user_path(user_id) + "/export")
        return answer

    def send_batch(self, events: Sequence[Event]) -> list[BatchResult]:
        answer = self._api.request("POST", "/v1/events/batch", json=_batch_body(events))
        results: list[BatchResult] = answer["results"]
        return results

    def subscribe(self, topic: str, user_id: str) -> bool:
        return bool(self._api.request("PUT", _subscriber_path(topic, user_id))["changed"])

    def unsubscribe(self, topic: str, user_id: str) -> bool:
        return bool(self._api.request("DELETE", _subscriber_path(topic, user_id))["changed"])

    def put_user(
        self,
        user_id: str,
        *,
        email: str | None = None,
        locale: str | None = None,
        time_zone: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        body = _profile(email=email, locale=locale, time_zone=time_zone, name=name)
        answer: dict[str, Any] = self._api.request("PUT", _user_path(user_id), json=body)
        return answer

    def create_webhook(self, url: str, events: Sequence[str] = ()) -> dict[str, Any]:
        """Tried once, like ``ProducerClient.create_webhook``."""
        answer: dict[str, Any] = self._api.request(
            "POST", "/v1/webhooks", json=_webhook_body(url, events), retry=False
        )
        return answer

    def webhooks(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._api.request("GET", "/v1/webhooks")["items"]
        return items

    def subscribers(self, topic: str, *, page_size: int = 100) -> Iterator[str]:
        cursor: str | None = None
        while True:  # bounded by the topic's size
            params: dict[str, str | int] = {"limit": page_size}
            if cursor is not None:
                params["cursor"] = cursor
            page = self._api.request("GET", f"/v1/topics/{quote(topic, safe='')}/subscribers", params=params)
            yield from (str(user) for user in page["items"])
            cursor = page["next"]
            if cursor is None:
                return
