"""Start-up and shutdown order of one Tidings process, and its graceful drain.

Start: backends (migrations run on open) -> gateway hub -> worker -> sender -> HTTP listener.
Drain (SIGTERM or Ctrl-C): refuse new work (503) -> tell live clients to resume elsewhere (WebSocket close
1012, SSE ends with a jittered retry hint) -> let the worker and the sender finish the batch in hand -> let
uvicorn finish in-flight requests -> close backends. Every step is bounded by ``drain_timeout``; a second
signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Generator, Iterable, Sequence
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI

from tidings.admin import install as install_admin
from tidings.api import home
from tidings.api.app import create_app
from tidings.api.routes import ROUTERS, ops
from tidings.backends import open_bus, open_log, open_store
from tidings.core.clock import Clock, SystemClock
from tidings.demo import install as install_demo
from tidings.errors import ConfigError, RoleCrashedError
from tidings.gateway.front import Front
from tidings.gateway.hub import Hub
from tidings.gateway.listener import FastGateway
from tidings.gateway.sse import stream_endpoint
from tidings.gateway.stream import EndReason
from tidings.gateway.websocket import websocket_endpoint
from tidings.ports import Append, Appended, Delivery, EventLog
from tidings.runtime import Runtime
from tidings.sender import Sender
from tidings.settings import Settings
from tidings.sweeper import Sweeper
from tidings.worker import FanoutWorker

log = structlog.get_logger("tidings.service")

ROLES = frozenset({"api", "worker", "gateway", "sender"})


class NoLog:
    """The event log of a process whose roles never touch it (a sender alone): empty, refusing any use but
    ``lag``, so ``tidings sender`` runs on a store alone (PostgreSQL holds no event log to open)."""

    async def append(self, items: Sequence[Append]) -> list[Appended | Exception]:
        raise ConfigError("this process has no event log (its roles do not use one)")

    async def read(self, max_items: int, timeout: float) -> list[Delivery]:
        raise ConfigError("this process has no event log (its roles do not use one)")

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        raise ConfigError("this process has no event log (its roles do not use one)")

    async def lag(self) -> int:
        return 0

    async def close(self) -> None:
        return None


async def open_runtime(
    settings: Settings, clock: Clock | None = None, roles: Iterable[str] = ROLES
) -> Runtime:
    """The backends of a process with ``roles``; a process that only sends opens no event log."""
    clock = clock or SystemClock()
    store = await open_store(settings.store_url, settings, clock)
    needs_log = bool(frozenset(roles) - {"sender"})
    log_: EventLog = await open_log(settings.broker, settings, store) if needs_log else NoLog()
    bus = await open_bus(settings.broker, settings)
    return Runtime(settings=settings, store=store, log=log_, bus=bus, clock=clock, hub=Hub(bus))


async def close_runtime(runtime: Runtime) -> None:
    for closer in (runtime.bus.close, runtime.log.close, runtime.store.close):
        try:
            await closer()
        except Exception:
            log.exception("close_failed")


def build_app(runtime: Runtime, roles: Iterable[str] = ROLES) -> FastAPI:
    """The HTTP app of a process with these roles. Every process serves the probes and ``/metrics`` (a
    worker-only process too, so orchestrators and Prometheus see it); the API routes come with the api role.
    ``/metrics`` is left out (404) when ``metrics_port`` puts it on a listener of its own (``ops.scrape_app``)."""
    roles = frozenset(roles)
    routers = ROUTERS if "api" in roles else (ops.router,)
    if runtime.settings.metrics_listen_port is not None:
        routers = tuple(ops.probes if r is ops.router else r for r in routers)
    app = create_app(runtime, routers)
    install_admin(app, runtime)  # every replica: its numbers are its own
    home.install(app, runtime.settings, roles)
    if "api" in roles:
        install_demo(app, runtime)
    if "gateway" in roles:
        app.add_api_websocket_route("/v1/ws", websocket_endpoint)
        app.add_route("/v1/stream", stream_endpoint, methods=["GET"], include_in_schema=False)
    return app


async def _when_started(server: uvicorn.Server, on_ready: Any) -> None:
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no start-up event to wait on
        await asyncio.sleep(0.05)
    if on_ready is not None:
        on_ready()


class _Server(uvicorn.Server):
    """uvicorn, with our drain in place of its signal handling (which would re-raise SIGTERM on exit)."""

    def __init__(self, config: uvicorn.Config, service: Service) -> None:
        super().__init__(config)
        self._service = service

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._service.request_drain)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


class _MetricsServer(uvicorn.Server):
    """The separate metrics listener: the main server owns the signals, so this one leaves them alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class Service:
    def __init__(self, settings: Settings, roles: Iterable[str] = ROLES, clock: Clock | None = None) -> None:
        self.settings = settings
        self.roles = frozenset(roles)
        self._clock = clock
        self._runtime: Runtime | None = None
        self._worker: FanoutWorker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._sender: Sender | None = None
        self._sender_task: asyncio.Task[None] | None = None
        self._server: _Server | None = None
        self._gateway: FastGateway | None = None
        self._metrics: _MetricsServer | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._sweeper: Sweeper | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._crashed: str | None = None  # the role whose task ended on an unexpected error, if one did

    def request_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(self.drain())
        elif self._server is not None:  # a second signal: stop now
            self._server.force_exit = True
            self._server.should_exit = True

    async def run(self, *, on_ready: Any = None) -> None:
        runtime = self._runtime = await open_runtime(self.settings, self._clock, self.roles)
        try:
            app = build_app(runtime, self.roles)
            if "worker" in self.roles:
                self._worker = FanoutWorker(runtime)
                self._worker_task = self._watched("worker", self._worker.run())
                self._sweeper = Sweeper(
                    runtime.store, self.settings, runtime.clock
                )  # retention, with the worker
                self._sweeper_task = self._watched("sweeper", self._sweeper.run())
            if "sender" in self.roles:
                self._sender = Sender(
                    runtime.store, self.settings, clock=runtime.clock, funnel=runtime.funnel
                )
                self._sender_task = self._watched("sender", self._sender.run())
            if "gateway" in self.roles and self.settings.ws_server == "fastws":
                s = self.settings
                # One port: the front hands /v1/ws upgrades on ``port`` to it (0007); ``ws_port`` adds its own.
                self._gateway = FastGateway(runtime, s.host, s.ws_port, reuse_port=True)
                if s.ws_port:
                    await self._gateway.start()
            metrics_task = await self._start_metrics(runtime)
            config = self._uvicorn_config(app)
            config.http = Front.of(self.settings, self._gateway).protocol()
            server = self._server = _Server(config, self)
            # A role that died during the awaits above (metrics, --ws-port) stops the server at once.
            if self._crashed is not None:
                server.should_exit = True
            announce = asyncio.create_task(_when_started(server, on_ready))
            await server.serve()
            announce.cancel()
            if self._drain_task is not None:
                await self._drain_task
            if self._metrics is not None and metrics_task is not None:
                self._metrics.should_exit = True  # scrapes stay answered until the main listener is done
                await metrics_task
        finally:
            if self._metrics is not None:
                self._metrics.should_exit = True
            await self._stop_worker()
            await self._stop_sender()
            if self._gateway is not None:
                await self._gateway.close(timeout=self.settings.drain_timeout)
            await close_runtime(runtime)
        if self._crashed is not None:
            raise RoleCrashedError(
                f"the {self._crashed} role stopped on an unexpected error (logged as role_crashed); the process "
                "exited so that its supervisor starts it again and what it held goes back to the log"
            )

    def _watched(self, role: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A role's loop as a task whose death is not silent. A loop ends on its own only when asked to stop;
        one that dies of an error it does not handle would leave the process serving without it: a worker
        whose partitions stay leased to it, events accepted and never fanned out. Crash-only instead: the
        error is logged, the process drains and exits non-zero, and a restart reads again from the log."""
        task = asyncio.create_task(work, name=f"tidings-{role}")
        task.add_done_callback(lambda done: self._role_ended(role, done))
        return task

    def _role_ended(self, role: str, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error("role_crashed", role=role, error=f"{type(error).__name__}: {error}", exc_info=error)
        if self._crashed is None:
            self._crashed = role
            self.request_drain()

    async def _start_metrics(self, runtime: Runtime) -> asyncio.Task[None] | None:
        """The metrics listener on ``metrics_listen_port``, if any, listening before this returns (so a failed
        bind, such as a port in use, ends the process at start-up)."""
        port = self.settings.metrics_listen_port
        if port is None:
            return None
        config = uvicorn.Config(
            ops.scrape_app(runtime),
            host=self.settings.host,
            port=port,
            http=Front.of(self.settings).protocol(),  # the deadlines and the cap here too
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
        )
        server = self._metrics = _MetricsServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # uvicorn offers no start-up event to wait on
            if task.done():
                await task  # uvicorn exits on a failed bind (SystemExit) or raises
                raise RuntimeError(f"the metrics listener on {self.settings.host}:{port} did not start")
            await asyncio.sleep(0.02)
        return task

    def _uvicorn_config(self, app: FastAPI) -> uvicorn.Config:
        s = self.settings
        return uvicorn.Config(
            app,
            host=s.host,
            port=s.port,
            http="httptools",
            ws="websockets-sansio",
            ws_max_size=s.max_frame_bytes,  # a larger frame closes the socket with 1009
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            lifespan="off",
            log_config=None,
            access_log=False,  # query strings may hold stream tickets: never log raw URLs
            timeout_graceful_shutdown=max(1, int(s.drain_timeout)),
            server_header=False,
        )

    async def drain(self) -> None:
        runtime = self._runtime
        assert runtime is not None
        log.info("drain_started")
        runtime.draining = True
        runtime.hub.drain(EndReason.DRAINING)
        if self._gateway is not None:
            await self._gateway.close(timeout=self.settings.drain_timeout)  # also refuses new sockets
        await self._stop_worker()
        await self._stop_sender()
        if self._server is not None:
            self._server.should_exit = True
        log.info("drain_done")

    async def _stop_sender(self) -> None:
        """The sends in hand finish (each bounded by the egress deadline), then the sender returns; past the
        drain timeout it is cancelled, and its leases expire for another sender to take the rows again."""
        if self._sender is None or self._sender_task is None or self._sender_task.done():
            return  # not running, or stopped already (drain, then run's own clean-up)
        self._sender.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._sender_task), timeout=self.settings.drain_timeout)
        except TimeoutError:
            log.warning("sender_drain_timeout")
            self._sender_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender_task

    async def _stop_sweeper(self) -> None:
        """The retention batch in hand commits (one short transaction), then the sweeper returns."""
        if self._sweeper is None or self._sweeper_task is None or self._sweeper_task.done():
            return
        self._sweeper.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._sweeper_task), timeout=self.settings.drain_timeout)
        except TimeoutError:
            self._sweeper_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper_task

    async def _stop_worker(self) -> None:
        await self._stop_sweeper()
        if self._worker is None or self._worker_task is None or self._worker_task.done():
            return
        self._worker.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._worker_task), timeout=self.settings.drain_timeout)
        except TimeoutError:
            log.warning("worker_drain_timeout")
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
