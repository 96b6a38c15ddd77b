"""JSON requests with bounded retries (see ``tidings.client.retry``), over httpx, async and sync."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from tidings import __version__
from tidings.client.errors import ApiError, ConnectionFailedError, api_error
from tidings.client.retry import Backoff, retry_delay

USER_AGENT = f"tidings-python/{__version__}"
Params = Mapping[str, str | int | bool]


def _answer(response: httpx.Response) -> Any | ApiError:
    if response.is_success:
        return response.json() if response.content else None
    return api_error(response)


def _give_up(failure: Exception, attempts: int) -> Exception:
    if isinstance(failure, ApiError):
        return failure
    return ConnectionFailedError(
        f"no answer after {attempts} attempt(s): {type(failure).__name__}: {failure}"
    )


class AsyncApi:
    """Requests over one ``httpx.AsyncClient``; ``sleep`` and ``random`` are injectable for tests."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        backoff: Backoff,
        *,
        random: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.http = http
        self.backoff = backoff
        self._random = random
        self._sleep = sleep

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Any:
        """The decoded JSON answer; raises ``ApiError`` or ``ConnectionFailedError`` once retries are spent.
        ``retry=False``: one attempt, for a request that is not safe to repeat."""
        attempt = 0
        while True:  # bounded: retry_delay answers None once backoff.max_attempts are spent
            try:
                response = await self.http.request(method, path, json=json, params=params, headers=headers)
                outcome = _answer(response)
                if not isinstance(outcome, ApiError):
                    return outcome
                failure: Exception = outcome
            except httpx.TransportError as exc:
                failure = exc
            delay = retry_delay(self.backoff, attempt, failure, self._random()) if retry else None
            if delay is None:
                raise _give_up(failure, attempt + 1) from (None if isinstance(failure, ApiError) else failure)
            await self._sleep(delay)
            attempt += 1


class SyncApi:
    """``AsyncApi`` for blocking code, over one ``httpx.Client``."""

    def __init__(
        self,
        http: httpx.Client,
        backoff: Backoff,
        *,
        random: Callable[[], float] = random.random,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.http = http
        self.backoff = backoff
        self._random = random
        self._sleep = sleep

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
    ) -> Any:
        attempt = 0
        while True:  # bounded like AsyncApi.request
            try:
                outcome = _answer(self.http.request(method, path, json=json, params=params, headers=headers))
                if not isinstance(outcome, ApiError):
                    return outcome
                failure: Exception = outcome
            except httpx.TransportError as exc:
                failure = exc
            delay = retry_delay(self.backoff, attempt, failure, self._random()) if retry else None
            if delay is None:
                raise _give_up(failure, attempt + 1) from (None if isinstance(failure, ApiError) else failure)
            self._sleep(delay)
            attempt += 1
