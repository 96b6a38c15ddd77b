"""Traces: OpenTelemetry, off by default, configured only from the standard ``OTEL_*`` variables.

One trace follows one event: ``api.append`` (the server span of the producer's request, a child of its
``traceparent`` when it sends one) -> ``worker.fanout`` -> ``store.write`` and ``bus.publish`` -> one
``gateway.deliver`` per connection, ended once the frame is written to the socket. The W3C trace context
crosses the processes *inside the data*: ``Event.trace`` in the event log, ``LiveMessage.trace`` (wire key
``tc``) on the bus, so every engine carries it the same way.

On/off. Tracing is on when ``OTEL_SDK_DISABLED`` is not ``true`` and any of ``OTEL_TRACES_EXPORTER`` (other
than ``none``), ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set. Exporters:
``otlp`` (OTLP over HTTP/protobuf; endpoint, headers, timeout and compression from ``OTEL_EXPORTER_OTLP_*``)
and ``console``. The SDK reads the rest itself: ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (service
name ``tidings`` otherwise), ``OTEL_TRACES_SAMPLER[_ARG]``, ``OTEL_BSP_*`` for the batching exporter thread.

Cost when off: nothing of OpenTelemetry is imported, no thread is started, and every helper here returns
after one check of a module global (cheaper than the API's no-op tracer, which still allocates a span and
swaps the context). Spans never carry bodies, tokens or user ids: event ids, app names, counts, seqs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from tidings.core.models import Event, InboxWrite, TraceCarrier
from tidings.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

log = structlog.get_logger("tidings.tracing")

TRACER_NAME = "tidings"
SWITCHES = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@dataclass(frozen=True, slots=True)
class _State:
    tracer: Tracer | None
    provider: TracerProvider | None = None
    # The sampler follows the parent's decision (ParentBased, the default): a child of an unsampled context
    # would be dropped anyway, so it is not even made (this is what keeps 1% sampling cheap).
    follows_parent: bool = True


_OFF = _State(tracer=None)
_state: _State | None = None  # None: not configured yet (the first use reads the environment)


def wanted(env: Mapping[str, str]) -> bool:
    """Whether the ``OTEL_*`` variables in ``env`` ask for traces."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = _exporter_names(env)
    return bool(exporters) and exporters != ["none"]


def _exporter_names(env: Mapping[str, str]) -> list[str]:
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names and any(env.get(name) for name in SWITCHES[1:]):
        names = ["otlp"]
    return names


def configure(env: Mapping[str, str] | None = None) -> bool:
    """Sets tracing up from ``env`` (``os.environ`` by default) unless already done; True when on.

    Call it at start-up: a bad configuration then raises ``ConfigError`` at once. Without that call, the
    first span configures tracing lazily, and a bad configuration only logs a warning and leaves it off.
    """
    global _state
    if _state is not None:
        return _state.tracer is not None
    env = os.environ if env is None else env
    if not wanted(env):
        _state = _OFF
        return False
    provider = _provider(_exporters(env))
    install(provider)
    return True


def _exporters(env: Mapping[str, str]) -> list[Any]:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigError(
            f"OTEL_* asks for traces: install the extra, pip install 'tidings[otel]' ({exc})"
        ) from exc
    exporters: list[Any] = []
    for name in _exporter_names(env):
        if name == "otlp":
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            if protocol not in (None, "", "http/protobuf"):
                raise ConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: only http/protobuf is supported"
                )
            exporters.append(OTLPSpanExporter(endpoint=_traces_endpoint(env)))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r}: supported are otlp, console and none")
    return exporters


def _traces_endpoint(env: Mapping[str, str]) -> str | None:
    """Where spans go, by the OTLP rules: the traces endpoint as given, or ``/v1/traces`` under the base one
    (None: the exporter's default, http://localhost:4318/v1/traces). Headers, timeout and compression the
    exporter reads from the process environment itself."""
    if env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return f"{base.rstrip('/')}/v1/traces" if base else None


def _provider(exporters: list[Any]) -> TracerProvider:
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over our default name.
    resource = Resource.create({"service.name": "tidings"}).merge(OTELResourceDetector().detect())
    provider = TracerProvider(resource=resource)  # the sampler comes from OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # one exporter thread each, bounded queue
    return provider


def install(provider: TracerProvider) -> None:
    """Trace with ``provider`` from now on (tests use an in-memory exporter; embedders their own)."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    global _state
    follows_parent = isinstance(provider.sampler, ParentBased)
    _state = _State(provider.get_tracer(TRACER_NAME), provider, follows_parent)


def reset() -> None:
    """Back to "not configured": the next use reads the environment again (for tests)."""
    global _state
    _state = None


def tracer() -> Tracer | None:
    """The tracer, or None when tracing is off (the one check every helper makes)."""
    state = _state
    if state is None:
        state = _lazy_configure()
    return state.tracer


def _lazy_configure() -> _State:
    global _state
    try:
        configure()
    except ConfigError as exc:
        log.warning("tracing_off", reason=exc.message)
        _state = _OFF
    assert _state is not None
    return _state


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None when there is none."""
    if tracer() is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def _context_of(parent: TraceCarrier | Span | None) -> Any:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    if parent is None:
        return Context()  # empty: a new trace, whatever span happens to be current
    if isinstance(parent, dict):
        return TraceContextTextMapPropagator().extract(parent)
    return trace.set_span_in_context(parent)


Attributes = Mapping[str, Any]


def start_span(
    name: str,
    parent: TraceCarrier | Span | None,
    attributes: Attributes | None = None,
    *,
    server: bool = False,
) -> Span | None:
    """A started span (not made current) under ``parent``: a carrier from another process, a span of this
    one, or None for a new trace. None when tracing is off."""
    tracer_ = tracer()
    if tracer_ is None or (isinstance(parent, dict) and _dropped(parent)):
        return None
    from opentelemetry.trace import SpanKind

    kind = SpanKind.SERVER if server else SpanKind.INTERNAL
    return tracer_.start_span(name, context=_context_of(parent), kind=kind, attributes=attributes)


def incoming(headers: Mapping[str, str]) -> TraceCarrier | None:
    """The W3C trace context a request came with (None without one, or with tracing off)."""
    if tracer() is None or "traceparent" not in headers:
        return None
    return {k: headers[k] for k in ("traceparent", "tracestate") if k in headers}


def _dropped(carrier: TraceCarrier) -> bool:
    """Whether a child of this context would not be sampled: its parent was not (flags ``00``), and the
    sampler follows the parent."""
    state = _state
    return state is not None and state.follows_parent and not sampled(carrier)


def sampled(carrier: TraceCarrier) -> bool:
    """The sampled bit of a traceparent's flags (``00-<trace>-<span>-<flags>``; other bits may be set)."""
    flags = carrier.get("traceparent", "")[53:55]
    try:
        return bool(int(flags, 16) & 1)
    except ValueError:
        return False


def carrier_of(span: Span | None) -> TraceCarrier | None:
    """The W3C headers that make a span in another process a child of ``span``."""
    if span is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: TraceCarrier = {}
    TraceContextTextMapPropagator().inject(carrier, context=_context_of(span))
    return carrier or None


def end_span(
    span: Span | None, error: BaseException | None = None, attributes: Attributes | None = None
) -> None:
    """Ends ``span``; an error marks it failed by its type only (messages may quote input)."""
    if span is None:
        return
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


@contextlib.contextmanager
def current(span: Span | None) -> Iterator[None]:
    """Makes ``span`` the current span inside the block (log lines then carry its ids); does not end it."""
    if span is None:
        yield
        return
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        yield


@contextlib.contextmanager
def server_span(
    name: str, headers: Mapping[str, str], attributes: Attributes | None = None
) -> Iterator[Span | None]:
    """A server span for the request with these headers (a child of its ``traceparent`` if any), current
    inside the block, ended after it; failed when the block raises."""
    if tracer() is None:
        yield None
        return
    span = start_span(name, incoming(headers), attributes, server=True)
    try:
        with current(span):
            yield span
    except BaseException as exc:
        end_span(span, exc)
        raise
    end_span(span)


_NO_CARRIERS: dict[str, TraceCarrier] = {}


class BatchSpans:
    """The spans of one fan-out batch: ``worker.fanout`` per event (a child of the producer's context, open
    until the batch is acked), and per commit step (``store.write``, ``bus.publish``) one span under each
    event whose rows the step carries, so each event's trace shows the write and publish that served it.

    Steps find their event by the *root* event id, the one inbox writes carry: a chunk job of a large topic
    (``Event.part``) has an id of its own, and its writes name the producer's event. Every method is a cheap
    no-op when tracing is off.
    """

    def __init__(self) -> None:
        self._on = tracer() is not None
        self._parents: dict[str, Span] = {}  # root event id -> the first fan-out span of it in this batch
        self._open: list[Span] = []

    def __enter__(self) -> BatchSpans:
        return self

    def __exit__(self, _type: object, error: BaseException | None, _tb: object) -> None:
        for span in self._open:
            end_span(span, error)
        self._open.clear()
        self._parents.clear()

    def event(self, event: Event) -> contextlib.AbstractContextManager[None]:
        """Opens ``worker.fanout`` for ``event``, current inside the block (for log lines)."""
        if not self._on:
            return contextlib.nullcontext()
        root = _root_id(event)
        attributes = {
            "tidings.event.id": root,
            "tidings.app": event.app,
            "tidings.event.type": event.type,
            "tidings.event.priority": event.priority,
        }
        if root != event.id:
            attributes["tidings.job.id"] = event.id
        span = start_span("worker.fanout", event.trace, attributes)
        if span is not None:
            self._open.append(span)
            self._parents.setdefault(root, span)
        return current(span)

    def fanned_out(self, event: Event, recipients: int) -> None:
        span = self._parents.get(event.id) if self._on else None
        if span is not None:
            span.set_attribute("tidings.recipients", recipients)

    @contextlib.contextmanager
    def step(self, name: str, writes: Sequence[InboxWrite]) -> Iterator[dict[str, TraceCarrier]]:
        """Spans ``name`` under the fan-out span of each event in ``writes``; yields, per event id, the
        carrier that makes a later span (the gateway's) a child of that step."""
        if not self._on:
            yield _NO_CARRIERS
            return
        rows: dict[str, int] = {}
        for write in writes:
            rows[write.event.id] = rows.get(write.event.id, 0) + 1
        spans = {  # only under a fan-out span: an event whose trace is not sampled has none
            event_id: start_span(name, self._parents[event_id], {"tidings.rows": count})
            for event_id, count in rows.items()
            if event_id in self._parents
        }
        carriers = {
            event_id: carrier for event_id, span in spans.items() if (carrier := carrier_of(span)) is not None
        }
        try:
            yield carriers
        except BaseException as exc:
            for span in spans.values():
                end_span(span, exc)
            raise
        for span in spans.values():
            end_span(span)


def _root_id(event: Event) -> str:
    """The producer's event id, also for a fan-out chunk job of it."""
    part = event.part
    return part.root if part is not None else event.id
