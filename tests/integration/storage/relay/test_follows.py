"""The follow handlers' locking on a scratch database: relays racing on one followee."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from messenger.cluster.local import LocalCluster
from messenger.storage.migrator import migrate
from messenger.storage.relay.follows import LOCK_FOLLOWEE
from messenger.topology import Topology
from tests.support.scratch import scratch_topology


@pytest.fixture(scope="module")
def follows_topology(cluster: LocalCluster) -> Iterator[Topology]:
    with scratch_topology(cluster.topology) as topology:
        assert all(o.ok for o in migrate(topology))
        yield topology


def test_two_relays_cannot_both_hold_the_followee_row_they_then_update(follows_topology: Topology) -> None:  # item 11
    # sync_follow locks the followee's row, then bumps its followers_count. Under FOR SHARE two
    # relays (follows from two shards) both got the lock and deadlocked on the UPDATE.
    dsn = follows_topology.shards[0].primary_dsn
    followee = uuid.uuid4()
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("INSERT INTO users (id, first_name, last_name) VALUES (%s, 'Ada', 'L')", (followee,))
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        first.execute(LOCK_FOLLOWEE, {"followee": followee})
        second.execute("SET lock_timeout = '200ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            second.execute(LOCK_FOLLOWEE, {"followee": followee})
