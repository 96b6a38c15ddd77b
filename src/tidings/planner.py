"""The fan-out decisions of one event: event + store -> inbox writes, with everything else it decides recorded.

For each event the fan-out worker hands it, ``Planner.plan`` yields the inbox writes in chunks of at most
``fanout_chunk`` recipients (the worker commits and publishes them), after it has:

- dropped a *stale* event (processed later than its type's TTL) and recorded the drop;
- resolved the recipients: the event's own list, or a topic's subscribers. A topic with more than one chunk of
  subscribers is not read here: it is *split* into ``chunk`` jobs (a topic and a subscriber range each) put
  back on the log, so any number of workers share one celebrity's fan-out and none holds the whole list. A
  ``split`` job finds at most ``fanout_split`` chunk boundaries by reading ids only (``Topics.boundaries``),
  appends a chunk job per range and, when there are more subscribers, the next split job;
- applied each recipient's preferences against the app's rules (``core.rules.decide``): suppressions are
  recorded here; what reaches the inbox carries its aggregation window and offline channel plans, which the
  store applies in the write transaction (``core.aggregation``).

Redelivery. Everything here is idempotent: decisions are recorded at most once per key; job ids are derived
from the root event id and the chunk index (``{root}.{index:x}``, ``{root}+{index:x}`` for splits), so a split
redelivered after a crash appends the same jobs (an engine that dedupes ids skips them; one that does not
hands them out again, and the inbox writes, idempotent on (app, user, root event), create nothing twice).
Appends happen before the worker acks the split, so a crash in between loses no range.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence

from tidings.core.models import Event, FanoutPart, InboxWrite
from tidings.core.rules import (
    DROP,
    MAX_ACTORS,
    NO_PREFERENCES,
    SUPPRESS,
    AppRules,
    Decision,
    UserPreferences,
    Verdict,
    decide,
    stale_reason,
)
from tidings.ports import Append, Preferences
from tidings.runtime import Runtime

RULES_TTL = 5.0  # seconds an app's rules are cached per process: a change applies within this
RULES_CACHED = 1000  # apps whose rules a process keeps
PRUNE_INTERVAL = 3600.0  # seconds between two prunes of the decision log
MAX_CHUNK_INDEX = 0xFFFFF  # job ids stay within 32 characters: 26 (root) + 1 + 5 hex digits

FannedOut = Callable[[Event, int], None]  # (root event, inbox writes planned) for one job


class RulesCache:
    """Apps' rules, read at most every ``RULES_TTL`` seconds per app (on the injected monotonic clock)."""

    def __init__(self, preferences: Preferences, monotonic: Callable[[], float]) -> None:
        self._preferences = preferences
        self._monotonic = monotonic
        self._cached: OrderedDict[str, tuple[float, AppRules]] = OrderedDict()

    async def get(self, app: str) -> AppRules:
        now = self._monotonic()
        hit = self._cached.get(app)
        if hit is not None and now - hit[0] < RULES_TTL:
            return hit[1]
        rules = await self._preferences.rules(app) or AppRules()
        self._cached[app] = (now, rules)
        self._cached.move_to_end(app)
        if len(self._cached) > RULES_CACHED:
            self._cached.popitem(last=False)
        return rules


def job_id(root: str, index: int, kind: str) -> str:
    if index > MAX_CHUNK_INDEX:
        raise ValueError("a topic split into more than 2^20 chunks: raise fanout_chunk")
    return f"{root}{'.' if kind == 'chunk' else '+'}{index:x}"


def root_of(event: Event) -> Event:
    """The producer's event behind a job: what inbox rows and decisions are keyed by."""
    if event.part is None:
        return event
    return dataclasses.replace(event, id=event.part.root, part=None)


class Planner:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._rules = RulesCache(runtime.store.preferences, runtime.clock.monotonic)
        self._pruned_at: float | None = None

    @property
    def _chunk(self) -> int:
        return self._runtime.settings.fanout_chunk

    async def plan(
        self, event: Event, fanned_out: FannedOut | None = None
    ) -> AsyncIterator[list[InboxWrite]]:
        """The inbox writes of ``event`` (a producer's event or a fan-out job), in chunks; see module doc."""
        await self._maybe_prune()
        rules = await self._rules.get(event.app)
        root = root_of(event)
        stale = stale_reason(root, rules, self._runtime.clock.time())
        if stale is not None:
            await self._record([Decision(root.app, root.id, "", DROP, stale, at=self._runtime.clock.time())])
            return
        if event.part is not None and event.part.kind == "split":
            await self._split(event, event.part)
            return
        if event.topic is not None and event.part is None and await self._is_large(event):
            await self._split(event, FanoutPart("split", event.id))
            return
        total = 0
        async for users in self._recipients(event):
            writes = await self._writes(root, users, rules)
            total += len(writes)
            if writes:
                yield writes
        if fanned_out is not None:
            fanned_out(root, total)

    async def _is_large(self, event: Event) -> bool:
        assert event.topic is not None
        return bool(await self._runtime.store.topics.boundaries(event.app, event.topic, None, self._chunk, 1))

    async def _recipients(self, event: Event) -> AsyncIterator[list[str]]:
        if event.recipients is not None:
            users = list(dict.fromkeys(event.recipients))
            for start in range(0, len(users), self._chunk):
                yield users[start : start + self._chunk]
            return
        assert event.topic is not None
        part = event.part
        after, until = (part.after, part.until) if part is not None else (None, None)
        topics = self._runtime.store.topics
        while True:  # bounded: each page moves ``after`` forward through a finite, ordered id range
            users = await topics.page(event.app, event.topic, after, self._chunk)
            if until is not None:
                users = [user for user in users if user <= until]
            if not users:
                return
            yield users
            after = users[-1]

    async def _split(self, event: Event, part: FanoutPart) -> None:
        """Appends the chunk jobs of the next ``fanout_split`` ranges after ``part.after`` (and the next split)."""
        assert event.topic is not None
        settings = self._runtime.settings
        bounds = await self._runtime.store.topics.boundaries(
            event.app, event.topic, part.after, self._chunk, settings.fanout_split
        )
        jobs, after, index = [], part.after, part.index
        for bound in bounds:
            jobs.append(_job(event, FanoutPart("chunk", part.root, index, after, bound)))
            after, index = bound, index + 1
        if len(bounds) == settings.fanout_split:  # maybe more: the next split job goes on from here
            jobs.append(_job(event, FanoutPart("split", part.root, index, after)))
        else:  # the tail, less than one chunk
            jobs.append(_job(event, FanoutPart("chunk", part.root, index, after, None)))
        await self._append(jobs)

    async def _append(self, jobs: Sequence[Event]) -> None:
        results = await self._runtime.log.append([Append(job) for job in jobs])
        for result in results:
            # A job id seen before comes back as a duplicate (a redelivered split): the same job, not an error.
            if isinstance(result, Exception):
                raise result

    async def _writes(self, root: Event, users: Sequence[str], rules: AppRules) -> list[InboxWrite]:
        """One chunk: each user's verdict; suppressions recorded, the rest as inbox writes."""
        prefs = await self._runtime.store.preferences.users(root.app, users)
        now = self._runtime.clock.time()
        window = rules.window_of(root.type) if root.group_key is not None else 0.0
        usual = decide(root, rules, NO_PREFERENCES, now)  # most users set nothing: decided once per chunk
        writes, suppressed = [], []
        for user in users:
            verdict = _verdict(root, rules, prefs.get(user), now, usual)
            if verdict.suppressed is not None:
                suppressed.append(Decision(root.app, root.id, user, SUPPRESS, verdict.suppressed, at=now))
                continue
            writes.append(
                InboxWrite(root.app, user, root, window, MAX_ACTORS, verdict.channels, verdict.in_app_reason)
            )
        await self._record(suppressed)
        return writes

    async def _record(self, decisions: Sequence[Decision]) -> None:
        if decisions:
            await self._runtime.store.decisions.record(decisions)

    async def _maybe_prune(self) -> None:
        now = self._runtime.clock.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = now
        retention = self._runtime.settings.decision_retention
        await self._runtime.store.decisions.prune(self._runtime.clock.time() - retention)


def _verdict(
    root: Event, rules: AppRules, prefs: UserPreferences | None, now: float, usual: Verdict
) -> Verdict:
    return usual if prefs is None else decide(root, rules, prefs, now)


def _job(event: Event, part: FanoutPart) -> Event:
    # No idempotency key: the producer's key belongs to the root event (the log would take the job for it).
    return dataclasses.replace(
        event, id=job_id(part.root, part.index, part.kind), part=part, idempotency_key=None
    )
