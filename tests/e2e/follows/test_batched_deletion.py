"""Deleting a user with thousands of followers: their reverse edges go a batch per transaction
(never one statement over all of them), the counters stay in step, and a deletion that stopped
mid-way is finished by the relay. `messenger check references` is the oracle."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg

from messenger.domain.ids import new_id
from messenger.storage.audit.checks import reference_checks
from messenger.storage.audit.runner import audit
from messenger.storage.follows import (
    DELETE_FOLLOWER_COPIES,
    DELETION_BATCH,
    FINISH_DELETION_AFTER_S,
    START_BATCHED_DELETION,
)
from messenger.storage.relay.runner import OutboxRelay
from messenger.storage.shards.primaries import PrimaryPools
from messenger.topology import Topology
from tests.e2e.follows.conftest import (
    USERS_URL,
    assert_clean,
    count_rows,
    new_user,
    runtime,
    skip_backoff,
)

FOLLOWERS = 3 * DELETION_BATCH + 500


def _seed_followers(api: httpx.AsyncClient, topology: Topology, victim: str, n: int) -> list[str]:
    """`n` users, each on its ring shard, following `victim`: both ends and both counters,
    written with one INSERT … SELECT unnest(…) per table and shard."""
    router = runtime(api).router
    ids = [new_id() for _ in range(n)]
    by_shard: dict[int, list[uuid.UUID]] = {}
    for user_id in ids:
        by_shard.setdefault(router.shard_for(user_id), []).append(user_id)
    for shard, members in by_shard.items():
        with psycopg.connect(topology.shard(shard).primary_dsn, autocommit=True) as conn, conn.transaction():
            conn.execute("INSERT INTO users (id, first_name, last_name, following_count) "
                         "SELECT unnest(%s::uuid[]), 'Fan', 'Test', 1", (members,))
            conn.execute("INSERT INTO follows (follower_id, followee_id, id, followee_first_name, followee_last_name) "
                         "SELECT f, %s, f, 'Ada', 'Test' FROM unnest(%s::uuid[]) f", (victim, members))
    victim_shard = router.shard_for(victim)
    with psycopg.connect(topology.shard(victim_shard).primary_dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("INSERT INTO followers (followee_id, follower_id, id, follower_first_name, "
                     "follower_last_name, created_at) "
                     "SELECT %s, f, f, 'Fan', 'Test', now() FROM unnest(%s::uuid[]) f", (victim, ids))
        conn.execute("UPDATE users SET followers_count = %s WHERE id = %s", (n, victim))
    return [str(i) for i in ids]


def _victim_state(topology: Topology, shard: int, victim: str) -> tuple[int | None, int]:
    with psycopg.connect(topology.shard(shard).primary_dsn, autocommit=True) as conn:
        counter = conn.execute("SELECT followers_count FROM users WHERE id = %s", (victim,)).fetchone()
        rows = conn.execute("SELECT count(*) FROM followers WHERE followee_id = %s", (victim,)).fetchone()
    assert rows is not None
    return (None if counter is None else counter[0]), rows[0]


async def _finish_and_audit(relay: OutboxRelay, pools: PrimaryPools, topology: Topology, victim: str) -> None:
    skip_backoff(topology)  # the intent event is due only FINISH_DELETION_AFTER_S later
    await relay.drain()
    assert_clean(await audit(pools, reference_checks(), relay, sample=50))
    for sql in ("SELECT count(*) FROM follows WHERE followee_id = %s OR follower_id = %s",
                "SELECT count(*) FROM followers WHERE followee_id = %s OR follower_id = %s"):
        assert count_rows(topology, sql, (victim, victim)) == 0
    assert count_rows(topology, "SELECT count(*) FROM users WHERE id = %s", (victim,)) == 0


async def test_deleting_a_user_with_thousands_of_followers_leaves_nothing_dangling(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools, rel_topology: Topology
) -> None:
    victim = await new_user(rel_api, shard=0)
    fans = _seed_followers(rel_api, rel_topology, victim, FOLLOWERS)
    assert (await rel_api.get(f"{USERS_URL}/{victim}")).json()["followers_count"] == FOLLOWERS

    started = time.perf_counter()
    response = await rel_api.delete(f"{USERS_URL}/{victim}")
    elapsed = time.perf_counter() - started
    assert response.status_code == 204, response.text
    print(f"deleted a user with {FOLLOWERS} followers in {elapsed:.3f} s")
    assert (await rel_api.get(f"{USERS_URL}/{victim}")).status_code == 404
    assert count_rows(rel_topology, "SELECT count(*) FROM outbox WHERE type = 'user.deleting' "
                      "AND payload->>'user_id' = %s", (victim,)) == 1

    await _finish_and_audit(relay, pools, rel_topology, victim)
    for fan in fans[:5]:
        assert (await rel_api.get(f"{USERS_URL}/{fan}")).json()["following_count"] == 0


async def test_a_deletion_that_stopped_mid_way_is_finished_by_the_relay(
    rel_api: httpx.AsyncClient, relay: OutboxRelay, pools: PrimaryPools, rel_topology: Topology
) -> None:
    victim = await new_user(rel_api, shard=1)
    _seed_followers(rel_api, rel_topology, victim, FOLLOWERS)
    # What the API call does before it stops: the intent, then one batch; then it is gone.
    with psycopg.connect(rel_topology.shard(1).primary_dsn, autocommit=True) as conn:
        assert conn.execute(START_BATCHED_DELETION, {"user": victim, "event": new_id(), "batch": DELETION_BATCH,
                                                     "after_s": FINISH_DELETION_AFTER_S}).fetchone()
        done = conn.execute(DELETE_FOLLOWER_COPIES, {"user": victim, "after": uuid.UUID(int=0),
                                                     "batch": DELETION_BATCH}).fetchone()
    assert done is not None and done[0] == DELETION_BATCH
    # Mid-way the user still exists, and their counter says what is left.
    assert _victim_state(rel_topology, 1, victim) == (FOLLOWERS - DELETION_BATCH,) * 2

    await relay.run_once()  # not due yet: the relay does not race a deletion still in progress
    assert _victim_state(rel_topology, 1, victim)[0] == FOLLOWERS - DELETION_BATCH

    await _finish_and_audit(relay, pools, rel_topology, victim)


async def test_a_user_with_few_followers_is_deleted_in_one_statement_without_an_intent(
    rel_api: httpx.AsyncClient, rel_topology: Topology
) -> None:
    victim = await new_user(rel_api, shard=2)
    _seed_followers(rel_api, rel_topology, victim, 10)
    assert (await rel_api.delete(f"{USERS_URL}/{victim}")).status_code == 204
    assert count_rows(rel_topology, "SELECT count(*) FROM outbox WHERE type = 'user.deleting' "
                      "AND payload->>'user_id' = %s", (victim,)) == 0
