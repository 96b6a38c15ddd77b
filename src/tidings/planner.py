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

The decisions themselves are pure (``core.fanout``, over ``core.rules``): this module is the I/O around them. It
loads what they need (an app's rules, cached; subscriber pages and boundaries; a chunk's preferences; the
clock), calls them, and writes what they return (decisions to the decision log, jobs to the event log). It
takes the ports it uses and its settings values, not the whole runtime.

Redelivery. Everything here is idempotent: decisions are recorded at most once per key; job ids are derived
from the root event id and the chunk index (``{root}.{index:x}``, ``{root}+{index:x}`` for splits), so a split
redelivered after a crash appends the same jobs (an engine that dedupes ids skips them; one that does not
hands them out again, and the inbox writes, idempotent on (app, user, root event), create nothing twice).
Appends happen before the worker acks the split, so a crash in between loses no range.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence

from tidings.core.clock import Clock
from tidings.core.fanout import (
    chunk_range,
    plan_chunk,
    recipient_chunks,
    root_of,
    split_jobs,
    stale_drop,
    within,
)
from tidings.core.models import Event, FanoutPart, InboxWrite
from tidings.core.rules import AppRules, Decision
from tidings.ports import Append, Decisions, EventLog, Preferences, Topics

RULES_TTL = 5.0  # seconds an app's rules are cached per process: a change applies within this
RULES_CACHED = 1000  # apps whose rules a process keeps
PRUNE_INTERVAL = 3600.0  # seconds between two prunes of the decision log

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


class Planner:
    """The planning of one worker: ``chunk`` recipients per inbox-write chunk and per chunk job, at most
    ``split`` chunk boundaries per split job, decisions kept ``retention`` seconds (``Settings.fanout_chunk``,
    ``fanout_split``, ``decision_retention``)."""

    def __init__(
        self,
        *,
        topics: Topics,
        preferences: Preferences,
        decisions: Decisions,
        log: EventLog,
        clock: Clock,
        chunk: int,
        split: int,
        retention: float,
    ) -> None:
        self._topics = topics
        self._preferences = preferences
        self._decisions = decisions
        self._log = log
        self._clock = clock
        self._chunk = chunk
        self._split_limit = split
        self._retention = retention
        self._rules = RulesCache(preferences, clock.monotonic)
        self._pruned_at: float | None = None

    async def plan(
        self, event: Event, fanned_out: FannedOut | None = None
    ) -> AsyncIterator[list[InboxWrite]]:
        """The inbox writes of ``event`` (a producer's event or a fan-out job), in chunks; see module doc."""
        await self._maybe_prune()
        rules = await self._rules.get(event.app)
        root = root_of(event)
        drop = stale_drop(root, rules, self._clock.time())
        if drop is not None:
            await self._record([drop])
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
        return bool(await self._topics.boundaries(event.app, event.topic, None, self._chunk, 1))

    async def _recipients(self, event: Event) -> AsyncIterator[list[str]]:
        if event.recipients is not None:
            for users in recipient_chunks(event.recipients, self._chunk):
                yield users
            return
        assert event.topic is not None
        after, until = chunk_range(event)
        while True:  # bounded: each page moves ``after`` forward through a finite, ordered id range
            users = within(await self._topics.page(event.app, event.topic, after, self._chunk), until)
            if not users:
                return
            yield users
            after = users[-1]

    async def _split(self, event: Event, part: FanoutPart) -> None:
        """Appends the chunk jobs of the next ``split`` ranges after ``part.after`` (and the next split)."""
        assert event.topic is not None
        bounds = await self._topics.boundaries(
            event.app, event.topic, part.after, self._chunk, self._split_limit
        )
        await self._append(split_jobs(event, part, bounds, self._split_limit))

    async def _append(self, jobs: Sequence[Event]) -> None:
        results = await self._log.append([Append(job) for job in jobs])
        for result in results:
            # A job id seen before comes back as a duplicate (a redelivered split): the same job, not an error.
            if isinstance(result, Exception):
                raise result

    async def _writes(self, root: Event, users: Sequence[str], rules: AppRules) -> list[InboxWrite]:
        """One chunk: each user's verdict; suppressions recorded, the rest as inbox writes."""
        prefs = await self._preferences.users(root.app, users)
        chunk = plan_chunk(root, users, rules, prefs, self._clock.time())
        await self._record(chunk.suppressed)
        return chunk.writes

    async def _record(self, decisions: Sequence[Decision]) -> None:
        if decisions:
            await self._decisions.record(decisions)

    async def _maybe_prune(self) -> None:
        now = self._clock.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_INTERVAL:
            return
        self._pruned_at = now
        await self._decisions.prune(self._clock.time() - self._retention)
