"""The start-up gate on the shards' schema: refuse to serve a drifted or outdated cluster."""

from __future__ import annotations

import asyncio

from messenger.storage.migrator import check_drift
from messenger.topology import Topology


class SchemaDrift(RuntimeError):
    """The shards are not all at the migration head; the message says which and how to fix."""


async def check_migrations(topology: Topology) -> str:
    """Raise SchemaDrift unless every reachable shard is at the migration head; return the head.

    Uses the migrator's own drift check, so the API and `messenger migrate status` can never
    disagree about what drift is.
    """
    report = await asyncio.to_thread(check_drift, topology)
    if not report.ok:
        raise SchemaDrift(report.message)
    return report.head
