"""What the chaos tests share: an app created on the test's PostgreSQL schema, and a producer with an ordering
key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence

from e2e.harness import TIDINGS, AppCredentials
from e2e.producer import JSON, Producer
from scaleout.topology import POSTGRES


async def create_app(env: Mapping[str, str], name: str = "chaos") -> AppCredentials:
    """``tidings apps create NAME --store POSTGRES`` with ``env`` (its TIDINGS_NAMESPACE picks the schema)."""
    argv = [str(TIDINGS), "apps", "create", name, "--store", POSTGRES]
    process = await asyncio.create_subprocess_exec(*argv, env=dict(env), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), 60.0)
    assert process.returncode == 0, f"apps create failed ({process.returncode})"
    obj = json.loads(out)
    return AppCredentials(app=obj["app"], api_key=obj["api_key"], jwt_secret=obj["jwt_secret"])


class KeyedProducer(Producer):
    """An e2e producer whose events all carry one ordering key (its name): the contract keeps a key's order
    whoever fans the events out, so the ledger holds every inbox to this producer's send order. (Without a
    key, an event to several users is keyed by its own id, and two of them may be fanned out in either order.)"""

    def _event(self, n: int, recipients: Sequence[str]) -> tuple[str, JSON]:
        key, body = super()._event(n, recipients)
        return key, {**body, "ordering_key": f"chaos-{self.name}"}
