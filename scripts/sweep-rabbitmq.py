"""Deletes the queues and exchanges that killed test runs left on the local RabbitMQ (127.0.0.1:5672).

A test that is killed (timeout, CI stop, kill -9 of pytest) never runs its cleanup, and each namespace holds
16 partitions x 3 lanes of quorum queues. A few hundred of them wedged the broker once (it accepted TCP and
never answered AMQP). `.ci/run` runs this before the suite; run it by hand with the project's venv:

    .venv/bin/python scripts/sweep-rabbitmq.py [--dry-run]

Only names of the test suites' namespaces are touched (the prefixes below, e.g. ``t0123456789.``), and only
queues without consumers: a test running at the same time keeps its queues.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys

import aio_pika

URL = "amqp://guest:guest@127.0.0.1:5672/"
# The namespaces tests/ makes (grep for token_hex there): a fixed prefix and random hex, or a fixed test name.
TEST_NAMESPACE = re.compile(
    r"^(?:[to][0-9a-f]{10}|wfm[0-9a-f]{8}|tdprobe[0-9a-f]{6}|p-[0-9a-f]{6}"
    r"|(?:scaleout|retain|deploytest|chaos|obs|bench_retention)_[0-9a-f]{8}"
    r"|tidings-(?:test|scaleout)-[0-9a-f]{8}|tnowhere|trestart|killtest)\."
)


def listed(what: str, *columns: str) -> list[list[str]]:
    out = subprocess.run(
        ["rabbitmqctl", what, "-q", "--no-table-headers", *columns],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


async def sweep(dry_run: bool) -> tuple[int, int]:
    queues = [
        name
        for name, consumers in listed("list_queues", "name", "consumers")
        if TEST_NAMESPACE.match(name) and consumers == "0"
    ]
    exchanges = [name for [name] in listed("list_exchanges", "name") if TEST_NAMESPACE.match(name)]
    if dry_run:
        print("\n".join(queues + exchanges))
        return len(queues), len(exchanges)
    connection = await aio_pika.connect(URL, timeout=10)
    try:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name)
        for name in exchanges:
            await channel.exchange_delete(name)
    finally:
        await connection.close()
    return len(queues), len(exchanges)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted")
    args = parser.parse_args()
    if shutil.which("rabbitmqctl") is None:
        print("sweep-rabbitmq: no rabbitmqctl here; nothing swept", file=sys.stderr)
        return 0
    queues, exchanges = asyncio.run(sweep(args.dry_run))
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"sweep-rabbitmq: {verb} {queues} queues and {exchanges} exchanges of test namespaces",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
