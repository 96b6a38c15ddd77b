"""The user SDK: one user's inbox and live stream, as an app's Python client (a bot, a test, a desktop app).

    user = UserClient("http://127.0.0.1:8080", token)
    async with user.stream("ws") as stream:
        async for notification in stream:
            print(notification["seq"], notification["data"])

A stream reconnects by itself (full-jitter backoff) and resumes with ``after`` = the last seq it yielded, so
it yields every notification once, in seq order, across dropped connections and server restarts; anything
at or below that seq is dropped as a duplicate. A resume point the server does not know (its store was
recreated or restored: a ``reset`` frame, or another ``epoch`` in ``ready``) is dropped: the stream goes on
from the server's ``last_seq``, counts it in ``resets`` and calls ``on_reset`` (reload the list then). It stops
for good only on refused credentials
(``AuthFailedError``), a protocol error (``StreamProtocolError``), or after ``backoff.max_attempts``
connection attempts in a row that never became ready (``ConnectionFailedError``).

Beside notifications a stream reports what changes the user's list (``on_retract``: the producer retracted
notifications, remove them; ``on_state``: archive, unarchive, unread, delete made on any of the user's
devices; ``on_read``: read and seen marks), each with the counts after it, kept in ``stream.unread`` and
``stream.unseen``. With a token function, a token that expires on an open WebSocket is replaced in-band (the
server's ``token_expired`` frame is answered with a fresh auth frame; the connection and its cursor stay); an
SSE stream, which cannot re-authenticate, reconnects at once with a fresh token and its resume point.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tidings.client.errors import (
    ApiError,
    AuthFailedError,
    ConnectionFailedError,
    StreamProtocolError,
    api_error,
)
from tidings.client.http import USER_AGENT, AsyncApi
from tidings.client.retry import Backoff
from tidings.client.sse import SSEDecoder
from tidings.core.backoff import full_jitter

Notification = dict[str, Any]
TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
Transport = Literal["ws", "sse"]
ResetHandler = Callable[[dict[str, Any]], None]  # gets {"type": "reset", "last_seq": n, "epoch": …}
# Gets the frame as the server sent it: {"type": "retract", "seqs": [..], "unread": n, "unseen": n},
# {"type": "state", "action": "archive"|"unarchive"|"unread"|"delete", "seqs": [..], "unread", "unseen"},
# {"type": "read", "field": "read"|"seen", "seqs": [..] | "up_to": n, "unread", "unseen"}.
FrameHandler = Callable[[dict[str, Any]], None]
Status = Literal["unread", "unseen", "archived", "all"]

STREAM_BACKOFF = Backoff(max_attempts=10, base=0.5, cap=30.0)
# Close codes after which reconnecting cannot help: the client must change (1008: credentials or origin).
_AUTH_CLOSE = 1008
_PROTOCOL_CLOSES = frozenset({1007, 1009})


class UserClient:
    """One user's REST calls and live streams. ``token`` is a JWT, or a function that returns a fresh one
    (called for every request and connection, so short-lived tokens work)."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        backoff: Backoff | None = None,
        stream_backoff: Backoff = STREAM_BACKOFF,
        idle_timeout: float = 45.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
        random: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._stream_backoff = stream_backoff
        self._idle_timeout = idle_timeout  # three missed server heartbeats (every 15 s when idle)
        self._trust_env = trust_env
        self._random = random
        self._sleep = sleep
        http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={"User-Agent": USER_AGENT},
            timeout=timeout,
            transport=transport,
            trust_env=trust_env,
        )
        self._api = AsyncApi(http, backoff or Backoff(), random=random, sleep=sleep)

    async def __aenter__(self) -> UserClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._api.http.aclose()

    @property
    def refreshes_tokens(self) -> bool:
        """True when ``token`` is a function: an expired token is then replaced, not a reason to stop."""
        return not isinstance(self._token, str)

    async def token(self) -> str:
        source = self._token
        if isinstance(source, str):
            return source
        value = source()
        return await value if inspect.isawaitable(value) else value

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {await self.token()}"}
        return await self._api.request(method, path, headers=headers, **kwargs)

    async def notifications(
        self,
        *,
        after: int | None = None,
        before: int | None = None,
        limit: int = 50,
        unread: bool = False,
        cursor: str | None = None,
        status: Status | None = None,
        category: str | None = None,
        type: str | None = None,
    ) -> dict[str, Any]:
        """One page ``{"items": [...], "next": cursor or None}``: newest first, or oldest first with ``after``.

        ``status`` filters (``unread``, ``unseen``, ``archived``, ``all``; the server's default leaves archived
        ones out), as do ``category`` and ``type``; the cursor pages within the same filter."""
        params: dict[str, str | int | bool] = {"limit": limit}
        filters = (("status", status), ("category", category), ("type", type))
        for name, value in (("after", after), ("before", before), ("cursor", cursor), *filters):
            if value is not None:
                params[name] = value
        if unread:
            params["unread"] = "true"
        page: dict[str, Any] = await self._request("GET", "/v1/me/notifications", params=params)
        return page

    async def unread_count(self) -> dict[str, int]:
        """``{"unread": n, "unseen": n}``."""
        counts: dict[str, int] = await self._request("GET", "/v1/me/unread-count")
        return counts

    async def mark_read(self, seqs: list[int] | None = None, *, up_to: int | None = None) -> int:
        """Marks ``seqs`` (or every seq up to ``up_to``) read; returns how many changed."""
        return await self._mark("read", seqs, up_to)

    async def mark_seen(self, seqs: list[int] | None = None, *, up_to: int | None = None) -> int:
        return await self._mark("seen", seqs, up_to)

    async def archive(self, seqs: list[int]) -> dict[str, Any]:
        """Archives ``seqs`` (out of the default list and the counts); the server's answer."""
        return await self._change("archive", seqs)

    async def unarchive(self, seqs: list[int]) -> dict[str, Any]:
        return await self._change("unarchive", seqs)

    async def mark_unread(self, seqs: list[int]) -> dict[str, Any]:
        """Marks ``seqs`` unread again."""
        return await self._change("unread", seqs)

    async def delete(self, seqs: list[int]) -> dict[str, Any]:
        """Deletes ``seqs`` from this user's inbox (the user's own choice: other users keep theirs)."""
        return await self._change("delete", seqs)

    async def _change(self, action: str, seqs: list[int]) -> dict[str, Any]:
        if isinstance(seqs, int) or not seqs:
            raise ValueError("seqs is a non-empty list of seqs")
        answer: dict[str, Any] = await self._request(
            "POST", f"/v1/me/notifications/{action}", json={"seqs": list(seqs)}
        )
        return answer

    async def _mark(self, field: str, seqs: list[int] | None, up_to: int | None) -> int:
        if (seqs is None) == (up_to is None):
            raise ValueError("give exactly one of seqs or up_to")
        body = {"seqs": seqs} if seqs is not None else {"up_to": up_to}
        answer = await self._request("POST", f"/v1/me/notifications/{field}", json=body)
        return int(answer["updated"])

    def stream(
        self,
        transport: Transport = "ws",
        after: int | None = None,
        *,
        epoch: str | None = None,
        on_reset: ResetHandler | None = None,
        on_retract: FrameHandler | None = None,
        on_state: FrameHandler | None = None,
        on_read: FrameHandler | None = None,
    ) -> NotificationStream:
        """The live stream; ``after`` None starts with what comes next, else with the seqs after it.

        ``epoch``: the one ``after`` was saved with (``stream.epoch``); another epoch on the server drops
        ``after``. ``on_reset`` is called when the resume point was dropped (the stream goes on from the
        server's ``last_seq``: reload what you show). ``on_retract``, ``on_state`` and ``on_read`` get the
        frames that change notifications already shown (see the module docstring)."""
        if transport not in ("ws", "sse"):
            raise ValueError("transport must be 'ws' or 'sse'")
        handlers = {"retract": on_retract, "state": on_state, "read": on_read}
        return NotificationStream(self, transport, after, epoch=epoch, on_reset=on_reset, handlers=handlers)

    # For NotificationStream: the pieces of one connection.

    def _ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/v1/ws"

    def _connect_ws(self) -> connect:
        return connect(
            self._ws_url(),
            open_timeout=self._api.http.timeout.connect,
            proxy=True if self._trust_env else None,
            user_agent_header=USER_AGENT,
            ping_interval=None,  # the server pings at the application level; silence is watched instead
        )


class _SessionEnded(Exception):
    """A connection ended in a way that is worth reconnecting after (drop, drain, slow consumer)."""


class NotificationStream:
    """An async iterator of notifications that reconnects and resumes; see the module docstring.

    Use it as ``async with`` (or call ``aclose()``) so the connection is closed when you stop reading.
    ``last_seq`` is the resume point: pass it as ``after`` to a later stream to continue where this one ended
    (with ``epoch``, the stream life it belongs to).
    """

    def __init__(
        self,
        client: UserClient,
        transport: Transport,
        after: int | None,
        *,
        epoch: str | None = None,
        on_reset: ResetHandler | None = None,
        handlers: dict[str, FrameHandler | None] | None = None,
    ) -> None:
        self.transport = transport
        self.last_seq = after
        self.epoch = epoch  # the server's stream life ``last_seq`` belongs to (None: not known yet)
        self.ready: dict[str, Any] | None = None  # the last ready frame / event
        self.connects = 0
        self.duplicates = 0
        self.resets = 0
        self.reauths = 0  # fresh tokens sent in-band on an open WebSocket
        self.unread: int | None = None  # the counts the last retract, state or read frame carried
        self.unseen: int | None = None
        self.expires_at: float | None = None  # the connection's token expiry after an in-band re-auth
        self._client = client
        self._on_reset_handler = on_reset
        self._handlers = {kind: h for kind, h in (handlers or {}).items() if h is not None}
        self._generator = self._run()

    def __aiter__(self) -> NotificationStream:
        return self

    async def __anext__(self) -> Notification:
        return await self._generator.__anext__()

    async def __aenter__(self) -> NotificationStream:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._generator.aclose()

    async def _run(self) -> AsyncGenerator[Notification, None]:
        backoff = self._client._stream_backoff
        failures = 0
        while True:  # bounded: backoff.max_attempts connection attempts in a row without a ready
            self.connects += 1
            ready_before = self.ready
            hint: float | None = None
            try:
                # aclosing: when the caller stops reading, the connection closes now, not at garbage collection.
                async with contextlib.aclosing(self._session()) as session:
                    async for notification in session:
                        yield notification
            except _SessionEnded as ended:
                hint = ended.__cause__.retry_after if isinstance(ended.__cause__, ApiError) else None
            failures = 0 if self.ready is not ready_before else failures + 1
            if failures >= backoff.max_attempts:
                raise ConnectionFailedError(f"no {self.transport} stream after {failures} attempts")
            delay = full_jitter(failures, self._client._random(), base=backoff.base, cap=backoff.cap)
            # A draining server's Retry-After is honoured, within the backoff's patience.
            await self._client._sleep(max(delay, min(hint or 0.0, backoff.max_wait)))

    def _session(self) -> AsyncGenerator[Notification, None]:
        return self._ws_session() if self.transport == "ws" else self._sse_session()

    def _on_ready(self, frame: dict[str, Any]) -> None:
        """A server behind ``last_seq`` sends a ``reset`` frame next (``_on_reset``). One too old to send it
        (no ``epoch`` in ready) would send nothing new that passes the duplicate filter: ``_SessionEnded``, and
        the next connection follows the server from its ``last_seq``. Another epoch than the resume point's:
        the server's seqs are another store's, so the resume point is dropped as for a reset."""
        self.ready = frame
        server_seq = int(frame["last_seq"])
        epoch = frame.get("epoch")
        if self.last_seq is None:
            self.last_seq = server_seq  # "only what comes next": resume from here later
        elif isinstance(epoch, str):
            # A resume point ahead of the server: its reset frame follows. Another epoch, else: what the
            # server resends up to its last_seq is dropped as duplicates; what comes next is yielded.
            if self.last_seq <= server_seq and self.epoch is not None and epoch != self.epoch:
                self._on_reset({"type": "reset", "last_seq": server_seq, "epoch": epoch})
        elif server_seq < self.last_seq:
            self.last_seq = server_seq
            self.resets += 1
            raise _SessionEnded
        if isinstance(epoch, str):
            self.epoch = epoch

    def _on_reset(self, frame: dict[str, Any]) -> None:
        """The resume point was ahead of the server (or of another epoch): the stream goes on from the
        server's ``last_seq``; the application is told, to reload what it shows."""
        self.last_seq = int(frame["last_seq"])
        epoch = frame.get("epoch")
        if isinstance(epoch, str):
            self.epoch = epoch
        self.resets += 1
        if self._on_reset_handler is not None:
            self._on_reset_handler(frame)

    def _on_change(self, frame: dict[str, Any]) -> None:
        """A retract, state or read frame: the counts after it, then the application's handler. A retraction
        that names its own seq (the marker row in the stream) moves the resume point past it."""
        unread, unseen = frame.get("unread"), frame.get("unseen")
        if isinstance(unread, int) and isinstance(unseen, int):
            self.unread, self.unseen = unread, unseen
        seq = frame.get("seq")
        if isinstance(seq, int) and (self.last_seq is None or seq > self.last_seq):
            self.last_seq = seq
        handler = self._handlers.get(str(frame.get("type")))
        if handler is not None:
            handler(frame)

    def _fresh(self, notification: Any) -> bool:
        """Whether to yield it: a notification at or below the last yielded seq is a duplicate."""
        seq = notification.get("seq") if isinstance(notification, dict) else None
        if not isinstance(seq, int):
            return False
        if self.last_seq is not None and seq <= self.last_seq:
            self.duplicates += 1
            return False
        self.last_seq = seq
        return True

    async def _ws_session(self) -> AsyncGenerator[Notification, None]:
        error: dict[str, Any] = {}
        try:
            async with self._client._connect_ws() as ws:
                auth: dict[str, Any] = {"type": "auth", "token": await self._client.token()}
                if self.last_seq is not None:
                    auth["after"] = self.last_seq
                await ws.send(json.dumps(auth))
                while True:  # ends with the connection (ConnectionClosed) or silence (TimeoutError)
                    frame = await self._receive(ws)
                    kind = frame.get("type")
                    if kind == "notification" and self._fresh(frame.get("notification")):
                        yield frame["notification"]
                    elif kind == "ready":
                        self._on_ready(frame)
                    elif kind == "reset":
                        self._on_reset(frame)
                    elif kind in ("retract", "state", "read"):
                        self._on_change(frame)
                    elif kind == "ping":
                        await ws.send('{"type":"pong"}')
                    elif kind == "token_expired" and self._client.refreshes_tokens:
                        # Re-auth in-band: same user, fresh token; the connection and its cursor stay.
                        fresh = {"type": "auth", "token": await self._client.token()}
                        await ws.send(json.dumps(fresh))
                        self.reauths += 1
                    elif kind == "reauthed":
                        self.expires_at = float(frame["expires_at"])
                    elif kind == "error":
                        error = frame
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            if code == _AUTH_CLOSE and error.get("code") == "token_expired" and self._client.refreshes_tokens:
                raise _SessionEnded from exc  # the next connection asks the token function for a fresh one
            _raise_for_close(code, error)
            raise _SessionEnded from exc
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise _SessionEnded from exc

    async def _receive(self, ws: ClientConnection) -> dict[str, Any]:
        raw = await asyncio.wait_for(ws.recv(), timeout=self._client._idle_timeout)
        try:
            frame = json.loads(raw)
        except ValueError:
            return {}
        return frame if isinstance(frame, dict) else {}

    async def _sse_session(self) -> AsyncGenerator[Notification, None]:
        client = self._client
        headers = {"Authorization": f"Bearer {await client.token()}", "Accept": "text/event-stream"}
        params = {"after": str(self.last_seq)} if self.last_seq is not None else {}
        timeout = httpx.Timeout(client._api.http.timeout.connect, read=client._idle_timeout)
        try:
            async with client._api.http.stream(
                "GET", "/v1/stream", headers=headers, params=params, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    refused = api_error(response)
                    if refused.code == "token_expired" and client.refreshes_tokens:
                        raise _SessionEnded  # reconnect with a fresh token from the token function
                    _raise_for_status(refused)
                decoder = SSEDecoder()
                async for line in response.aiter_lines():
                    event = decoder.feed(line)
                    if event is None:
                        continue
                    if event.event == "notification":
                        notification = json.loads(event.data)
                        if self._fresh(notification):
                            yield notification
                    elif event.event == "ready":
                        self._on_ready(json.loads(event.data))
                    elif event.event == "reset":
                        self._on_reset(json.loads(event.data))
                    elif event.event in ("retract", "state", "read"):
                        self._sse_change(json.loads(event.data), event.id)
                    elif event.event == "token_expired" and client.refreshes_tokens:
                        break  # SSE cannot re-auth in-band: reconnect now, with a fresh token and the cursor
                    elif event.event == "error":
                        break  # slow consumer, or an expired token: resume from the store (a fixed token: 401)
        except (httpx.TransportError, ValueError) as exc:
            raise _SessionEnded from exc
        raise _SessionEnded  # the server ended the stream (drain)

    def _sse_change(self, frame: Any, event_id: str | None) -> None:
        """An SSE retract carries its marker row's seq as the event id (the stream's cursor moves past it)."""
        if not isinstance(frame, dict):
            return
        if frame.get("type") == "retract" and event_id is not None and event_id.isdigit():
            frame = {**frame, "seq": int(event_id)}
        self._on_change(frame)


def _raise_for_close(code: int, error: dict[str, Any]) -> None:
    reason = str(error.get("code") or f"close_{code}")
    if code == _AUTH_CLOSE:
        raise AuthFailedError(401, reason, "the server refused the credentials or origin (close 1008)")
    if code in _PROTOCOL_CLOSES:
        raise StreamProtocolError(f"the server closed the stream for a client error ({code}, {reason})")


def _raise_for_status(error: ApiError) -> None:
    if isinstance(error, AuthFailedError) or not (error.retryable or error.status >= 500):
        raise error
    raise _SessionEnded from error
