"""The start-up gate on the shards' schema: refuse to serve a drifted or outdated cluster."""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from messenger.cluster.topology import Topology
from messenger.storage.router import SCHEMA_VERSION_SQL, ShardRouter

log = logging.getLogger(__name__)


class SchemaDrift(RuntimeError):
    """The shards are not all at the migration head; the message says which and how to fix."""


async def check_migrations(topology: Topology) -> str | None:
    """Raise SchemaDrift unless every shard is at the migration head; return the head if known.

    Uses the migrator's own drift check (storage/migrator.py) so the API and `messenger migrate
    status` can never disagree about what drift is.
    """
    try:
        from messenger.storage.migrator import check_drift
    except ImportError:  # pragma: no cover - only before the migrator exists
        log.warning("no migrator: starting without a schema drift check")
        return None
    if inspect.iscoroutinefunction(check_drift):
        report: Any = await check_drift(topology)
    else:
        report = await asyncio.to_thread(check_drift, topology)
    if not report.ok:
        raise SchemaDrift(report.message)
    head = getattr(report, "head", None)
    return head if isinstance(head, str) else None


async def shard_schema_version(router: ShardRouter) -> str | None:
    """The version every reachable primary reports, if they agree (used when the migrator does
    not name its head); None when no primary answers or they differ."""
    results = await asyncio.gather(
        *(router.probe(s, "primary", SCHEMA_VERSION_SQL) for s in router.shard_indexes),
        return_exceptions=True,
    )
    versions = {r[0][0] for r in results if not isinstance(r, BaseException) and r}
    return versions.pop() if len(versions) == 1 else None
