"""Partition leases on Redis (``backends.partitions.LeaseStore``): a key with a TTL per partition.

``{ns}:partitions:lease:<n>`` holds partition n's lease: ``SET NX PX lease`` takes it, a script renews it
(``PEXPIRE`` only while its value is still this member) and another deletes it the same way, so a member never
renews or releases a lease another one took after its own ran out. ``{ns}:partitions:members`` is a sorted set
of member -> last heartbeat (ms, Redis' own clock from ``TIME``, so the members' clocks need not agree);
members unheard of for ``lease`` are removed when counted.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from tidings.backends.redis.client import translated

RENEW = """
local kept = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    kept[#kept + 1] = i
  end
end
return kept
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Heartbeat and count in one: stamps this member with the server's time, drops the silent ones, counts.
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], 10 * tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"""


class RedisLeases:
    def __init__(self, client: Redis, namespace: str, lease: float, member: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:partitions:lease:"
        self._members_key = f"{namespace}:partitions:members"
        self._member = member
        self._lease_ms = max(1, round(lease * 1000))
        self._renew = client.register_script(RENEW)
        self._release = client.register_script(RELEASE)
        self._heartbeat = client.register_script(HEARTBEAT)
        self._members = 1

    async def heartbeat(self) -> None:
        with translated("partition heartbeat"):
            self._members = int(
                await self._heartbeat(keys=[self._members_key], args=[self._member, self._lease_ms])
            )

    async def members(self) -> int:
        return max(1, self._members)

    async def take(self, partition: int) -> bool:
        with translated("partition lease"):
            taken = await self._client.set(
                self._prefix + str(partition), self._member, nx=True, px=self._lease_ms
            )
        return bool(taken)

    async def renew(self, partitions: Sequence[int]) -> set[int]:
        if not partitions:
            return set()
        keys = [self._prefix + str(p) for p in partitions]
        with translated("partition lease"):
            kept = await self._renew(keys=keys, args=[self._member, self._lease_ms])
        return {partitions[int(i) - 1] for i in kept}

    async def release(self, partition: int) -> None:
        with translated("partition lease"):
            await self._release(keys=[self._prefix + str(partition)], args=[self._member])

    async def leave(self) -> None:
        with translated("partition heartbeat"):
            await self._client.zrem(self._members_key, self._member)
