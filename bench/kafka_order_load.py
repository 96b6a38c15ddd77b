"""Diagnosis of the Kafka order-by-key test under load (docs/scaling.md, "Kafka: rebalances under load").

Runs the 4-worker, 800-event order-by-key scenario of tests/backends/test_order_by_key.py on the session's Tansu
broker, with a timeline of rebalances (assigned/revoked, aiokafka's coordinator log lines), the time spent in
the log's calls and the inbox writes, the event-loop stalls, and the workers' GC time. Prints one JSON line:
revokes, session expiries, the longest loop stall, GC seconds and collections, whether every key completed.

    cd <repo> && PYTHONPATH=$PWD/src python bench/kafka_order_load.py
    KL_GC0=1 ...                  the same with worker_gc_chunks=0
    KL_SESSION_MS=3000 KL_REBAL_MS=3000 ...   other group timers

Load: two bounded busy loops (timeout 600 python3 -c "while True: pass" &), killed by pid afterwards.
"""

import asyncio
import collections
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, "tests/backends")
import test_order_by_key as t
from backend_support import appends, make_event
from providers import PROVIDERS, namespace

from tidings.backends.kafka import log as klog
from tidings.backends.memory import MemoryBus
from tidings.backends.sql.sqlite import SqliteStore
from tidings.runtime import Runtime
from tidings.settings import Settings
from tidings.testing import FakeClock
from tidings.worker import FanoutWorker

T0 = time.monotonic()
import logging


class H(logging.Handler):
    def emit(self, r):
        events_log.append((now(), "aio", r.levelname, r.getMessage()[:160]))


h = H()
h.setLevel(logging.INFO)
logging.getLogger("aiokafka").addHandler(h)
logging.getLogger("aiokafka").setLevel(logging.INFO)


class L(list):
    def append(self, x):
        super().append(x)
        print("LIVE", *x, file=sys.stderr, flush=True)


events_log = L()
lags = []


def now():
    return round(time.monotonic() - T0, 2)


orig_assigned, orig_revoked = klog.KafkaEventLog.assigned, klog.KafkaEventLog.revoked


def assigned(self, parts):
    events_log.append(
        (now(), id(self) % 1000, "assigned", sorted(f"{tp.topic[-6:]}{tp.partition}" for tp in parts))
    )
    return orig_assigned(self, parts)


async def revoked(self, parts):
    events_log.append((now(), id(self) % 1000, "revoked", len(parts)))
    return await orig_revoked(self, parts)


klog.KafkaEventLog.assigned, klog.KafkaEventLog.revoked = assigned, revoked
reads = collections.Counter()
orig_read = klog.KafkaEventLog.read


async def read(self, n, timeout):
    got = await orig_read(self, n, timeout)
    reads[int(now())] += len(got)
    return got


klog.KafkaEventLog.read = read
timing = collections.defaultdict(lambda: [0, 0.0])


def timed(cls, name):
    orig = getattr(cls, name)

    async def w(self, *a, **k):
        s = time.monotonic()
        try:
            return await orig(self, *a, **k)
        finally:
            timing[f"{cls.__name__}.{name}"][0] += 1
            timing[f"{cls.__name__}.{name}"][1] += time.monotonic() - s

    setattr(cls, name, w)


from aiokafka import AIOKafkaConsumer

_init = AIOKafkaConsumer.__init__


def _patched(self, *a, **k):
    if os.environ.get("KL_SESSION_MS") and k.get("group_id"):
        ms = int(os.environ["KL_SESSION_MS"])
        k["session_timeout_ms"] = ms
        k["heartbeat_interval_ms"] = ms // 5
        if os.environ.get("KL_REBAL_MS"):
            k["rebalance_timeout_ms"] = int(os.environ["KL_REBAL_MS"])
    _init(self, *a, **k)


AIOKafkaConsumer.__init__ = _patched
for n in ("read", "ack", "_take_buffered", "_catch_up", "_commit", "_commit_skipped"):
    timed(klog.KafkaEventLog, n)
for n in ("getmany", "commit", "end_offsets"):
    timed(AIOKafkaConsumer, n)
timed(t.UnevenInbox, "write")


async def main():
    async def lagger():
        while True:
            s = time.monotonic()
            await asyncio.sleep(0.05)
            lags.append(time.monotonic() - s - 0.05)

    asyncio.create_task(lagger())
    provider = PROVIDERS["kafka"]
    tmp = tempfile.mkdtemp()
    ns = namespace()
    settings = Settings(
        data=tmp,
        sqlite_synchronous="NORMAL",
        worker_batch=t.WORKER_BATCH,
        log_lease=2.0,
        **({"worker_gc_chunks": 0} if os.environ.get("KL_GC0") else {}),
    )
    clock = FakeClock()
    store = await SqliteStore.open(settings.store_url, settings, clock)
    producer = await provider.open_log(settings, store, ns)
    logs = [await provider.open_log(settings, store, ns) for _ in range(t.WORKERS)]
    events_log.append((now(), 0, "setup-done", ""))
    bus = MemoryBus()
    workers = [
        FanoutWorker(
            Runtime(settings=settings, store=t.WorkerStore(store, seed), log=lg, bus=bus, clock=clock)
        )
        for seed, lg in enumerate(logs)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    sent = {f"u{k:02d}": [] for k in range(t.KEYS)}
    events = []
    for i in range(t.PER_KEY):
        for k in range(t.KEYS):
            user = f"u{k:02d}"
            e = make_event(f"e{i:03d}-{user}", recipients=(user,))
            events.append(e)
            sent[user].append(e.id)
    for s in range(0, len(events), t.APPEND_BATCH):
        await producer.append(appends(*events[s : s + t.APPEND_BATCH]))
    events_log.append((now(), 0, "appended", ""))
    start = time.monotonic()
    ok = False
    while time.monotonic() - start < t.DONE_WITHIN:
        got = {u: await t.inbox_order(store, u) for u in sent}
        if all(len(got[u]) >= t.PER_KEY for u in sent):
            ok = True
            break
        await asyncio.sleep(0.2)
    events_log.append((now(), 0, "done" if ok else "TIMEOUT", sum(len(v) for v in got.values())))
    order_ok = all(got[u] == sent[u] for u in sent)
    gcinfo = (round(sum(w.gc_seconds for w in workers), 2), sum(w._chunks for w in workers))
    for w in workers:
        w.stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    for lg in [producer, *logs]:
        await lg.close()
    await store.close()
    await bus.close()
    for e in events_log:
        print(*e)
    for k, v in sorted(timing.items()):
        print(k, v[0], round(v[1], 2), round(v[1] / max(1, v[0]) * 1000, 1), "ms")
    print("reads/s", dict(sorted(reads.items())))
    rebal = sum(1 for e in events_log if e[2] == "revoked")
    expired = sum(1 for e in events_log if "session expired" in str(e[3]))
    polltimeout = sum(1 for e in events_log if "poll" in str(e[3]).lower())
    print(
        json.dumps(
            {
                "gc": gcinfo,
                "revokes": rebal,
                "expired": expired,
                "poll": polltimeout,
                "lag_max": round(max(lags or [0]), 3),
                "ok": ok,
                "order_ok": order_ok,
                "fanout_s": round(time.monotonic() - start, 2),
                "total": now(),
            }
        )
    )


asyncio.run(main())
