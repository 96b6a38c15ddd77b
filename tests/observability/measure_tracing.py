"""What tracing costs, end to end: CPU time per event through the API, the fan-out worker and a live stream,
with tracing off, on (every span batched and exported over OTLP/HTTP to a receiver in another process), and
on with 1% of traces sampled (``parentbased_traceidratio``), as a busy deployment would run it.

    .venv/bin/python tests/observability/measure_tracing.py [events per run, default 2000] [rounds, default 3]

CPU time of this process (``time.process_time``: the exporter's thread included, the receiver's process not)
rather than wall time, so a machine busy with other work still gives comparable figures. Everything runs in
one process as in ``tidings serve``: an in-process client posts one event per request (``POST /v1/events``),
then 100 per request (``/v1/events/batch``); the worker fans each out, one connected user receives every
notification. Bounded by the event count.
Not a test (no ``test_`` prefix): it prints its figures.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from observability.server import free_port  # noqa: E402
from observability.support import Stack, open_stack  # noqa: E402
from tidings.observability import tracing  # noqa: E402

RECEIVER = """
import asyncio, sys
sys.path.insert(0, {tests!r})
from observability.otlp_receiver import OtlpReceiver
async def main():
    receiver = OtlpReceiver()
    receiver.port = {port}
    await receiver.start()
    await asyncio.sleep(3600)
asyncio.run(main())
"""


async def _events(stack: Stack, count: int, batch: int) -> float:
    """CPU seconds to accept, fan out and deliver ``count`` events, ``batch`` per request (1: POST /v1/events)."""
    acme = await stack.tenant(f"acme{time.monotonic_ns()}")
    client = await stack.connect(acme.name, "alice")
    body = {"type": "post.liked", "recipients": ["alice"], "data": {"text": "Bob liked your post"}}
    started = time.process_time()
    for _ in range(count // batch):
        if batch == 1:
            answer = await stack.http.post("/v1/events", json=body, headers=acme.producer)
            assert answer.status_code == 202, answer.text
        else:
            events = {"events": [body] * batch}
            answer = await stack.http.post("/v1/events/batch", json=events, headers=acme.producer)
            assert answer.status_code == 200, answer.text
        await stack.fan_out()
        await client.notifications(batch)
    return time.process_time() - started


SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"}


async def run(count: int, batch: int, mode: str, endpoint: str) -> float:
    """CPU seconds per event with tracing ``off``, ``on`` (every trace kept) or ``1%`` (1% of traces kept)."""
    tracing.reset()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if mode != "off" else {}
    for name in SAMPLED:  # the SDK reads its sampler from the process environment
        os.environ.pop(name, None)
    if mode == "1%":
        os.environ.update(SAMPLED)
    assert tracing.configure(env) is (mode != "off")
    async with open_stack(Path(tempfile.mkdtemp())) as stack:
        seconds = await _events(stack, count, batch)
    state = tracing._state
    if state is not None and state.provider is not None:
        flushed = time.process_time()
        state.provider.force_flush()
        seconds += time.process_time() - flushed
    return seconds / count


def main(count: int, rounds: int) -> None:
    port = free_port()
    code = RECEIVER.format(tests=str(TESTS), port=port)
    receiver = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(TESTS)})
    try:
        time.sleep(2.0)  # the receiver's start-up (bounded: it only has to bind a port)
        for batch in (1, 100):
            results: dict[str, list[float]] = {"off": [], "on": [], "1%": []}
            for _ in range(rounds):
                for mode in results:  # alternate, so a change in the machine's load hits every mode
                    results[mode].append(asyncio.run(run(count, batch, mode, f"http://127.0.0.1:{port}")))
            best = {mode: min(values) for mode, values in results.items()}
            print(f"{batch:3} event(s) per request, best of {rounds}, CPU per event end to end:")
            for mode, seconds in best.items():
                added = f" (+{100 * (seconds / best['off'] - 1):.0f}%)" if mode != "off" else ""
                print(
                    f"    tracing {mode:>3}: {seconds * 1e6:5.0f} µs{added}, {1 / seconds:5.0f} events/s on one core"
                )
    finally:
        receiver.terminate()
        receiver.wait(10)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000, int(sys.argv[2]) if len(sys.argv) > 2 else 3)
